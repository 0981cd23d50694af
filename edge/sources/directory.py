"""A folder of images (`dir://images/`), in sorted order, for tests and replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ImageError
from edge.formats.images import read_image
from edge.sources.base import FrameSource, SourceError, SourceUri

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DirectorySource(FrameSource):
    live = False

    def __init__(self, uri: str, path: str, loop: bool = False):
        super().__init__(uri)
        self.path = Path(path)
        self.loop = loop
        self._files: list[Path] = []
        self._pos = -1

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.uri}: no such folder")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not self._files:
            raise SourceError(f"{self.uri}: no images (.jpg, .png, ...) in the folder")
        self._pos = -1

    def grab(self) -> bool:
        self._pos += 1
        if self._pos >= len(self._files):
            if not self.loop:
                return False
            self._pos = 0
        return True

    def retrieve(self) -> np.ndarray:
        try:
            return read_image(self._files[self._pos])
        except ImageError as exc:
            raise SourceError(str(exc)) from exc

    def describe(self) -> dict:
        return {**super().describe(), "images": len(self._files)}


def make(source: SourceUri) -> DirectorySource:
    """``dir://images/?loop=1``."""
    return DirectorySource(source.uri, source.target, **source.options)
