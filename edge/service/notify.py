"""The systemd notify protocol without extra dependencies: READY, WATCHDOG, STATUS, STOPPING."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Talks to $NOTIFY_SOCKET when systemd started us; does nothing otherwise."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        enabled = usec and usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at half the watchdog interval, as systemd recommends.
        self.watchdog_interval = int(usec) / 2e6 if enabled else None
        self._last_ping = 0.0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None

    def send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Call only after a healthy capture -> infer -> decide cycle; rate-limited here."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
