"""The local status page and its server."""
