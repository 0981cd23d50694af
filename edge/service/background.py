"""Slow work off the daemon's loop (loading a model, building an engine), so that the loop keeps
classifying with what it has and keeps feeding the systemd watchdog; the loop applies each result."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from edge.service.queues import drain

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]


class Background:
    """One job per name at a time; ``done(result, error)`` runs on the loop's thread, in ``apply()``."""

    def __init__(self) -> None:
        self._results: queue.SimpleQueue[tuple[Done, Any, BaseException | None]] = queue.SimpleQueue()
        self._running: dict[str, threading.Thread] = {}

    def busy(self, name: str) -> bool:
        thread = self._running.get(name)
        return thread is not None and thread.is_alive()

    def submit(self, name: str, work: Callable[[], Any], done: Done) -> bool:
        """Start ``work`` in its own thread; False (nothing started) while a job of this name runs."""
        if self.busy(name):
            return False

        def run() -> None:
            try:
                self._results.put((done, work(), None))
            except Exception as exc:  # handed to ``done``: a failed load must never stop the bin
                self._results.put((done, None, exc))

        self._running[name] = thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return True

    def apply(self) -> None:
        """On the loop: hand each finished job's result to its ``done``."""
        for done, result, error in drain(self._results):
            done(result, error)
