"""Waiting before a restart that may help (no model loads, the loop failed): under systemd the daemon
waits longer after each failed start in a row, then exits 75 for systemd to start it again.

systemd 252 (Debian bookworm, Raspberry Pi OS) has no RestartSteps, and the unit's StartLimitBurst
(5 starts in 300 s) would give up on a bin for good after a few quick failures. So the back-off is
ours: 30 s, 60 s, 120 s, then every 300 s, counted in a file that a good start removes. While it
waits, STATUS says why and EXTEND_TIMEOUT_USEC keeps the start timeout away.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from edge.system.notify import EXTEND_S, Notifier
from edge.system.signals import set_on

log = logging.getLogger(__name__)

FIRST_S = 30.0
MAX_S = 300.0
SLICE_S = 0.5


def delay_after(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed start in a row."""
    return min(MAX_S, FIRST_S * 2 ** max(0, failures - 1))


class RestartBackoff:
    def __init__(self, path: Path, notifier: Notifier):
        self.path = Path(path)
        self.notifier = notifier

    def failures(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def reset(self) -> None:
        """A good start: the next failure waits the shortest time again."""
        self.path.unlink(missing_ok=True)

    def wait(self, reason: str) -> float:
        """Count a failed start and, under systemd, wait before exiting (SIGTERM cuts it short). Returns
        the seconds waited (0 outside systemd: a person at a terminal gets the error at once)."""
        failures = self.failures() + 1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(str(failures))
        except OSError as exc:
            log.warning("%s: cannot count failed starts: %s", self.path, exc)
        if not self.notifier.supervised:
            return 0.0
        delay = delay_after(failures)
        log.error("%s; start %d failed in a row: exiting for a restart in %.0f s", reason, failures, delay)
        stop = threading.Event()
        set_on(stop, signal.SIGTERM)
        with self.notifier.extending(f"failed: {reason[:200]}; restarting in {delay:.0f} s", delay + EXTEND_S):
            end = time.monotonic() + delay
            # In slices: a SIGTERM the kernel hands to another thread (the one extending the start timeout)
            # runs Python's handler only once the main thread is back from its wait, not in the middle of it.
            while not stop.is_set() and (left := end - time.monotonic()) > 0:
                stop.wait(min(SLICE_S, left))
        return delay
