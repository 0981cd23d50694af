"""Errors that repeat, logged once per change: a failing SD card otherwise fills the journal at the loop's
rate (~30 lines/s), and the lines that matter scroll away."""

from __future__ import annotations

import logging


class OncePerChange:
    """Logs an error when it first appears and when it changes (saying how often the one before repeated),
    and once when it clears."""

    def __init__(self, log: logging.Logger, what: str):
        self.log, self.what = log, what
        self.current: str | None = None
        self.repeats = 0  # times the current error came again since it was logged

    def error(self, message: str) -> None:
        if message == self.current:
            self.repeats += 1
            return
        self._summarise()
        self.current, self.repeats = message, 0
        self.log.error("%s", message)

    def ok(self) -> None:
        """The operation worked: an error logged before is over."""
        if self.current is not None:
            self._summarise()
            self.log.info("%s works again", self.what)
            self.current = None

    def _summarise(self) -> None:
        if self.current is not None and self.repeats:
            self.log.error("%s (repeated %d more times)", self.current, self.repeats)
