"""Waiting before a restart that may help (no model loads, the loop failed): under systemd the daemon
waits longer after each failed start in a row, then exits 75 for systemd to start it again.

systemd 252 (Debian bookworm, Raspberry Pi OS) has no RestartSteps, and the unit's StartLimitBurst
(5 starts in 300 s) would give up on a bin for good after a few quick failures. So the back-off is
ours: 30 s, 60 s, 120 s, then every 300 s, by the failed starts of the last WINDOW_S, kept in a file. A good
start does not reset it: a fault that recurs on the first item after each start (about every 45 s) would then
wait 30 s each time and reach the start limit; counted in the window, it backs off further each time, and a
bin that runs well for the window's length starts from 30 s again. While it waits, STATUS says why and
EXTEND_TIMEOUT_USEC keeps the start timeout away.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.system.notify import EXTEND_S, Notifier
from edge.system.signals import set_on

log = logging.getLogger(__name__)

FIRST_S = 30.0
MAX_S = 300.0
WINDOW_S = 1800.0  # failed starts this recent count
SLICE_S = 0.5


def delay_after(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed start in the window."""
    return min(MAX_S, FIRST_S * 2 ** max(0, failures - 1))


class RestartBackoff:
    def __init__(self, path: Path, notifier: Notifier, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.notifier = notifier
        self.clock = clock  # the wall clock: the count outlives the process

    def _recent(self) -> list[float]:
        """When the failed starts of the window happened (an unreadable file: none)."""
        try:
            times = json.loads(self.path.read_text() or "[]")
        except (OSError, ValueError):
            return []
        now = self.clock()
        if not isinstance(times, list):
            return []
        # either side of now: a clock set back at boot must not forget the failures just before it
        return [t for t in times if isinstance(t, (int, float)) and abs(now - t) < WINDOW_S]

    def failures(self) -> int:
        """Failed starts within the last WINDOW_S."""
        return len(self._recent())

    def record(self) -> int:
        """Count a failed start now; returns the failed starts in the window, this one included."""
        recent = [*self._recent(), self.clock()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(recent))
        except OSError as exc:
            log.warning("%s: cannot count failed starts: %s", self.path, exc)
        return len(recent)

    def wait(self, reason: str) -> float:
        """Count a failed start and, under systemd, wait before exiting (SIGTERM cuts it short). Returns
        the seconds waited (0 outside systemd: a person at a terminal gets the error at once)."""
        failures = self.record()
        if not self.notifier.supervised:
            return 0.0
        delay = delay_after(failures)
        log.error(
            "%s; %d failed start(s) in %.0f min: exiting for a restart in %.0f s",
            reason,
            failures,
            WINDOW_S / 60,
            delay,
        )
        stop = threading.Event()
        set_on(stop, signal.SIGTERM)
        with self.notifier.extending(f"failed: {reason[:200]}; restarting in {delay:.0f} s", delay + EXTEND_S):
            end = time.monotonic() + delay
            # In slices: a SIGTERM the kernel hands to another thread (the one extending the start timeout)
            # runs Python's handler only once the main thread is back from its wait, not in the middle of it.
            while not stop.is_set() and (left := end - time.monotonic()) > 0:
                stop.wait(min(SLICE_S, left))
        return delay
