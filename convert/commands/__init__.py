"""The workstation's subcommands of `smartbin`, registered through the ``smartbin.commands`` entry point."""
