"""The FrameSource interface: open, grab, retrieve, close. Threads and health live in capture.py."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edge.errors import SmartbinError


class SourceError(SmartbinError):
    """A camera or stream failed (unplugged, dropped, unreadable); the capture loop reconnects."""


@dataclass(frozen=True)
class Frame:
    """One captured frame: RGB uint8 pixels, a per-source id and when it was captured."""

    image: np.ndarray
    frame_id: int
    ts: float  # wall clock (time.time()) at capture, for messages
    mono: float  # time.monotonic() at capture, for latency


@dataclass(frozen=True)
class SourceUri:
    """A checked source URI: its scheme, what it points at and its options."""

    uri: str
    scheme: str
    target: str
    options: dict


class FrameSource(ABC):
    """A camera, stream, clip or generator.

    ``grab`` advances to the next frame without decoding it; ``retrieve`` decodes the last
    grabbed frame. Skipped frames are grabbed but never decoded.
    """

    #: A live source runs at its own pace and frames are skipped; a replay waits for the consumer.
    live: bool = True

    def __init__(self, uri: str):
        self.uri = uri

    @abstractmethod
    def open(self) -> None:
        """Open the device; raise SourceError with a message that says what to do."""

    @abstractmethod
    def grab(self) -> bool:
        """Advance to the next frame. False at the end of a finite source; SourceError on failure."""

    @abstractmethod
    def retrieve(self) -> np.ndarray:
        """Decode the last grabbed frame to RGB uint8."""

    def close(self) -> None:
        """Release the device."""

    def timestamp_ms(self) -> float | None:
        """The device's or stream's own time of the last grabbed frame, where it gives one (None otherwise):
        it tells new frames of a still scene from one buffer repeated."""
        return None

    def describe(self) -> dict:
        """What the source really delivers (size, fps, format), for status and logs."""
        return {"uri": self.uri}

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pacer:
    """Holds a free-running source to its frame rate (a clip at its real speed, a simulated camera)."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._next = time.monotonic()

    def restart(self) -> None:
        self._next = time.monotonic()

    def until_next(self) -> float:
        """Seconds until the next frame is due (0 for a source that does not run free)."""
        return max(0.0, self._next + self.period - time.monotonic()) if self.period else 0.0

    def wait(self) -> None:
        if self.period:
            self._next += self.period
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
