"""Video clips (`file://clip.mp4?loop=1&realtime=1`) for tests, demos and replays."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from edge.sources.base import SourceError
from edge.sources.opencv import OpenCVSource


class FileSource(OpenCVSource):
    """A replay processes every frame unless ``realtime``: then it runs at the clip's rate and skips."""

    def __init__(self, uri: str, path: str, loop: bool = False, realtime: bool = False):
        super().__init__(uri, path)
        self.path = Path(path)
        self.loop = loop
        self.live = realtime
        self._period = 0.0
        self._next = 0.0

    def hint(self) -> str:
        return "file missing or not a readable video" if self.path.exists() else "no such file"

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.uri}: no such file")
        super().open()
        fps = self.capture.get(cv2.CAP_PROP_FPS) or 0
        self._period = 1.0 / fps if self.live and fps > 0 else 0.0
        self._next = time.monotonic()

    def grab(self) -> bool:
        if self._period:
            self._next += self._period
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return super().grab()

    def at_end(self) -> bool:
        if not self.path.is_file():
            raise SourceError(f"{self.uri}: clip is gone")
        if self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return self.capture.grab()
        return False
