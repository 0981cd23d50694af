"""Taking everything already waiting in a queue, without blocking."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def drain(q: queue.Queue[T] | queue.SimpleQueue[T]) -> Iterator[T]:
    """Yield the items queued now; stop (never wait) when the queue is empty."""
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return
