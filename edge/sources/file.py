"""Video clips (`file://clip.mp4?loop=1&realtime=1`) for tests, demos and replays."""

from __future__ import annotations

from pathlib import Path

import cv2

from edge.sources.base import Pacer, SourceError, SourceUri
from edge.sources.opencv import OpenCVSource


class FileSource(OpenCVSource):
    """A replay processes every frame unless ``realtime``: then it runs at the clip's rate and skips."""

    def __init__(self, uri: str, path: str, loop: bool = False, realtime: bool = False):
        super().__init__(uri, path)
        self.path = Path(path)
        self.loop = loop
        self.live = realtime
        self._pacer = Pacer(0)

    def hint(self) -> str:
        return "file missing or not a readable video" if self.path.exists() else "no such file"

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.uri}: no such file")
        super().open()
        self._pacer = Pacer((self.capture.get(cv2.CAP_PROP_FPS) or 0) if self.live else 0)

    def grab(self) -> bool:
        self._pacer.wait()
        return super().grab()

    def at_end(self) -> bool:
        if not self.path.is_file():
            raise SourceError(f"{self.uri}: clip is gone")
        if self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return self.capture.grab()
        return False


def make(source: SourceUri) -> FileSource:
    """``file://clip.mp4?loop=1&realtime=1``."""
    return FileSource(source.uri, source.target, **source.options)
