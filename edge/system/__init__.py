"""The system glue: systemd's notify protocol, signals, restart back-off, the bin's identity, paths,
the journal, secrets, the CPU, versions, atomic files, quiet repeats, queues."""
