"""A bin's own name when its config gives none: two bins left on the defaults must never share one.

The device id names the MQTT topics and the client id, and a broker disconnects the older of two
clients with the same id: two bins with one id would kick each other off forever. So the default
is the machine's own: its hostname, unless that is a stock name many boards share (a Raspberry Pi
is "raspberrypi" until someone renames it), and then ``bin-`` and the start of /etc/machine-id,
which systemd makes unique per installation.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

STOCK_HOSTNAMES = {"", "localhost", "raspberrypi", "ubuntu", "debian", "jetson", "nano", "orin", "tegra-ubuntu"}
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_id() -> str | None:
    for path in MACHINE_ID_FILES:
        try:
            value = path.read_text().strip()
        except OSError:
            continue
        if re.fullmatch(r"[0-9a-f]{32}", value):
            return value
    return None


def default_device_id() -> str:
    """The hostname (made topic-safe), or ``bin-<8 hex of the machine id>`` for a stock hostname."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    if host.lower() not in STOCK_HOSTNAMES:
        return host
    mid = machine_id()
    return f"bin-{mid[:8]}" if mid else host or "bin"
