"""What the daemon's parts have to tell the loop, in one queue that the loop drains once a turn, before
the next frame: answers to commands, another model serving, the retained model topic to send again
(edge/models/events.py), and the status page's "classify now". Parts post; none of them reaches the daemon
or its outputs."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass

from edge.models.events import Answered, ModelChanged, Poster, Switched
from edge.system.queues import drain
from edge.web.page import ClassifyRequest


@dataclass(frozen=True)
class ClassifyNow:
    """The page's "classify now": the serving model on the newest frame, answered through ``request``."""

    request: ClassifyRequest


Event = Answered | Switched | ModelChanged | ClassifyNow


class Events(Poster):
    """Any thread posts; the loop takes what waits (never blocking). Unbounded: an answer is never dropped,
    and every poster is bounded on its own side (command queue, page requests, one job per name)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def classify_now(self, request: ClassifyRequest) -> None:
        """Post the page's "classify now" (called from a web thread)."""
        self.post(ClassifyNow(request))

    def drain(self) -> Iterator[Event]:
        """The events posted so far, oldest first."""
        return drain(self._queue)
