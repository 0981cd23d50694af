"""`smartbin demo`: the whole path offline, and its fleet loop."""
