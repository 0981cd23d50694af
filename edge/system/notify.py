"""The systemd notify protocol without extra dependencies: READY, WATCHDOG, STATUS, STOPPING."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# While a model loads or an engine builds before READY, ask systemd for EXTEND_S more each EVERY_S
# (TimeoutStartSec would kill a TensorRT build of several minutes), for at most LIMIT_S in all:
# a load that hangs for good still ends in the start timeout.
EXTEND_S = 60.0
EVERY_S = 20.0
LIMIT_S = 3600.0


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
        if self._socket is not None:
            # Never wait on the service manager: a reader that falls behind fills the datagram queue (10
            # deep by default), and a blocking send would then hang the very loop the watchdog watches.
            self._socket.setblocking(False)

    @property
    def supervised(self) -> bool:
        """Whether systemd (or another service manager speaking its protocol) started us."""
        return self.address is not None

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

    @contextmanager
    def extending(self, status: str, limit_s: float = LIMIT_S) -> Iterator[None]:
        """Around slow work before READY: STATUS says what happens, EXTEND_TIMEOUT_USEC keeps the start
        timeout away while it lasts (up to ``limit_s``)."""
        done = threading.Event()

        def extend() -> None:
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_S * 1e6)}\nSTATUS={status}")
                if done.wait(min(EVERY_S, max(0.0, deadline - time.monotonic()))):
                    return

        thread = threading.Thread(target=extend, name="sd-extend", daemon=True) if self._socket else None
        if thread is not None:
            thread.start()
        try:
            yield
        finally:
            done.set()
            if thread is not None:
                thread.join()

    def watchdog(self) -> None:
        """Call only after a healthy capture -> infer -> decide cycle; rate-limited here."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
