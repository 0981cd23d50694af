"""`smartbin actuator`: its own program and systemd service, moving the flaps for fresh decisions."""
