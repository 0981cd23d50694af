"""Slow work off the daemon's loop (loading a model, building an engine), so that the loop keeps
classifying with what it has and keeps feeding the systemd watchdog; the loop applies each result."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from edge.system.queues import drain

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]


PENDING = 16  # jobs of one name waiting for the one that runs


class Background:
    """One job per name at a time, later ones of that name waiting their turn (up to PENDING);
    ``done(result, error)`` runs on the loop's thread, in ``apply()``."""

    def __init__(self) -> None:
        self._results: queue.SimpleQueue[tuple[str, Done, Any, BaseException | None]] = queue.SimpleQueue()
        self._running: dict[str, threading.Thread] = {}
        self._pending: dict[str, deque[tuple[Callable[[], Any], Done]]] = {}

    def busy(self, name: str) -> bool:
        thread = self._running.get(name)
        return thread is not None and thread.is_alive()

    def submit(self, name: str, work: Callable[[], Any], done: Done) -> bool:
        """Start ``work`` in its own thread, or queue it behind the running job of this name; False
        (nothing started or queued) when PENDING jobs wait already."""
        waiting = self._pending.setdefault(name, deque())
        if name in self._running or waiting:
            if len(waiting) >= PENDING:
                return False
            waiting.append((work, done))
            return True
        self._start(name, work, done)
        return True

    def _start(self, name: str, work: Callable[[], Any], done: Done) -> None:
        def run() -> None:
            try:
                self._results.put((name, done, work(), None))
            except Exception as exc:  # handed to ``done``: a failed load must never stop the bin
                self._results.put((name, done, None, exc))

        self._running[name] = thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()

    def apply(self) -> None:
        """On the loop: hand each finished job's result to its ``done``, then start the next of its name."""
        for name, done, result, error in drain(self._results):
            self._running.pop(name, None)
            done(result, error)
            waiting = self._pending.get(name)
            if waiting and name not in self._running:
                self._start(name, *waiting.popleft())
