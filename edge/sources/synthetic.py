"""Generated frames (`synthetic://?items=5&classes=4&seed=0`): an empty bin, then items dropped and removed.

The script is known in advance (``schedule``), so tests can check one decision per item.
"""

from __future__ import annotations

import time

import numpy as np

from edge.sources.base import FrameSource, Pacer, SourceUri
from edge.sources.scene import draw_item, empty_floor

DRAW_AHEAD_S = 0.004  # a frame is drawn in ~0.5 ms
NOISE_FIELDS = 8  # precomputed sensor-noise fields, cycled: a frame costs a copy and an add


class SyntheticSource(FrameSource):
    """Frames of an empty floor, with item k present for ``present`` frames after ``empty`` empty ones.

    ``items=0`` means an endless random script. With ``fps`` 0 a frame is made when asked for
    (a camera that is always fresh); with ``fps`` > 0 it runs free at that rate, like a real camera.
    """

    def __init__(
        self,
        uri: str,
        classes: int = 4,
        items: int = 5,
        empty: int = 8,
        present: int = 8,
        width: int = 320,
        height: int = 240,
        seed: int = 0,
        loop: bool = False,
        fps: float = 0.0,
    ):
        super().__init__(uri)
        self.live = fps > 0
        self._pacer = Pacer(fps)
        self.classes, self.items, self.empty, self.present = classes, items, empty, present
        self.width, self.height, self.seed, self.loop = width, height, seed, loop
        self.rng = np.random.default_rng(seed)
        self.index = -1
        self.schedule: list[int] = [int(c) for c in np.random.default_rng(seed).integers(0, classes, max(items, 1))]

    def open(self) -> None:
        self.index = -1
        self._floor = empty_floor(self.height, self.width, self.seed)
        self._item_layer: tuple[int, np.ndarray] | None = None
        self._ahead: tuple[int, np.ndarray] | None = None  # (index, frame) drawn before its time
        # One field at a time: generating all at once in float64 was a 30 MB spike in peak RSS.
        self._noise = np.empty((NOISE_FIELDS, self.height, self.width, 3), np.int16)
        for field in self._noise:
            field[...] = np.clip(self.rng.normal(0, 3.0, field.shape), -127, 127)
        self._pacer.restart()

    @property
    def cycle(self) -> int:
        return self.empty + self.present

    def item_at(self, index: int) -> int | None:
        """The class visible in frame ``index``, or None for an empty bin."""
        slot, phase = divmod(index, self.cycle)
        if phase < self.empty:
            return None
        if self.items and slot >= self.items:
            return None
        return (
            self.schedule[slot % len(self.schedule)]
            if self.items
            else int(np.random.default_rng((self.seed, slot)).integers(0, self.classes))
        )

    def frames_total(self) -> int | None:
        return None if not self.items or self.loop else self.items * self.cycle + self.empty

    def grab(self) -> bool:
        # A live camera's frame is in memory when its time comes (a CSI camera's DMA): the next one is drawn
        # shortly before it is due, while the reader waits for it, so the frame's cost is the camera's.
        self._ahead = None
        if self.live:
            time.sleep(max(0.0, self._pacer.until_next() - DRAW_AHEAD_S))
            self._ahead = (self.index + 1, self._render(self.index + 1))
        self._pacer.wait()
        self.index += 1
        total = self.frames_total()
        if total is not None and self.index >= total:
            return False
        return True

    def retrieve(self) -> np.ndarray:
        if self._ahead is not None and self._ahead[0] == self.index:
            return self._ahead[1]
        return self._render(self.index)

    def _render(self, index: int) -> np.ndarray:
        frame = self._floor
        cls = self.item_at(index)
        if cls is not None:
            slot = index // self.cycle
            # The item lies still while present: drawn once per slot, same place each frame.
            if self._item_layer is None or self._item_layer[0] != slot:
                layer = self._floor.copy()
                draw_item(layer, cls, self.classes, np.random.default_rng((self.seed, slot, 1)))
                self._item_layer = (slot, layer)
            frame = self._item_layer[1]
        noisy = frame + self._noise[index % NOISE_FIELDS]
        return np.clip(noisy, 0, 255).astype(np.uint8)

    def describe(self) -> dict:
        return {**super().describe(), "width": self.width, "height": self.height, "items": self.items}


def write_clip(path: str, source: SyntheticSource, fps: float = 10.0) -> int:
    """Render a finite synthetic script to a video file (MJPG in .avi, mp4v otherwise). Returns frames written."""
    import cv2

    if source.frames_total() is None:
        raise ValueError("write_clip needs a finite script (items > 0, loop off)")
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if str(path).endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (source.width, source.height))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write video")
    count = 0
    with source:
        while source.grab():
            writer.write(cv2.cvtColor(source.retrieve(), cv2.COLOR_RGB2BGR))
            count += 1
    writer.release()
    return count


def make(source: SourceUri) -> SyntheticSource:
    """``synthetic://?items=5&classes=4``."""
    return SyntheticSource(source.uri, **source.options)
