"""Sources read through OpenCV's VideoCapture: V4L2 cameras, network streams, clips, Jetson CSI."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.sources.base import FrameSource, SourceError

log = logging.getLogger(__name__)

# The one OpenCV boundary: tests replace this with a fake capture (tests/fakes.py).
VideoCapture = cv2.VideoCapture


class OpenCVSource(FrameSource):
    """Subclasses say what to open (``target``) and with which backend (``api``)."""

    api: int = cv2.CAP_ANY
    params: tuple[int, ...] = ()  # VideoCapture open parameters (property, value, ...)

    def __init__(self, uri: str, target: str | int):
        super().__init__(uri)
        self.target = target
        self.capture = None

    def configure(self, capture) -> None:
        """Request size, rate or format before the first frame (cameras)."""

    def open(self) -> None:
        args = (self.target, self.api, list(self.params)) if self.params else (self.target, self.api)
        capture = VideoCapture(*args)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.uri}: cannot open ({self.hint()})")
        self.configure(capture)
        self.capture = capture

    def hint(self) -> str:
        return "check the path or address"

    def grab(self) -> bool:
        if self.capture is None:
            raise SourceError(f"{self.uri}: not open")
        if not self.capture.grab():
            return self.at_end()
        return True

    def at_end(self) -> bool:
        """A failed grab: the end of a clip (False) or a dropped stream (SourceError)."""
        raise SourceError(f"{self.uri}: no frame (device gone or stream dropped)")

    def retrieve(self) -> np.ndarray:
        ok, bgr = self.capture.retrieve()
        if not ok or bgr is None:
            raise SourceError(f"{self.uri}: frame could not be decoded")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def timestamp_ms(self) -> float | None:
        """CAP_PROP_POS_MSEC: the buffer's timestamp for V4L2, the stream's for RTSP/HTTP; 0 when unknown."""
        stamp = float(self.capture.get(cv2.CAP_PROP_POS_MSEC)) if self.capture is not None else 0.0
        return stamp if stamp > 0 else None

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None

    def describe(self) -> dict:
        info = super().describe()
        if self.capture is not None:
            info.update(
                width=int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                fps=round(float(self.capture.get(cv2.CAP_PROP_FPS)), 2),
            )
        return info
