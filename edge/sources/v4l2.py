"""USB cameras through V4L2 (`v4l2:///dev/video0`, `/dev/video0` or an index), MJPG by default."""

from __future__ import annotations

import logging

import cv2

from edge.sources.base import SourceUri
from edge.sources.opencv import OpenCVSource

log = logging.getLogger(__name__)


class V4L2Source(OpenCVSource):
    api = cv2.CAP_V4L2

    def __init__(
        self, uri: str, device: str | int, width: int = 640, height: int = 480, fps: float = 30, fourcc: str = "MJPG"
    ):
        super().__init__(uri, device)
        self.requested = {"width": width, "height": height, "fps": fps, "fourcc": fourcc}

    def hint(self) -> str:
        return "is the camera plugged in, and is the user in the 'video' group?"

    def configure(self, capture) -> None:
        req = self.requested
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*req["fourcc"]))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, req["width"])
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, req["height"])
        capture.set(cv2.CAP_PROP_FPS, req["fps"])
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a driver-side backlog
        got = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            float(capture.get(cv2.CAP_PROP_FPS)),
        )
        if got != (req["width"], req["height"], float(req["fps"])):
            log.warning(
                "%s: asked for %dx%d at %g fps, the camera gives %dx%d at %g fps",
                self.uri,
                req["width"],
                req["height"],
                req["fps"],
                *got,
            )

    def describe(self) -> dict:
        return {**super().describe(), "requested": self.requested}


def make(source: SourceUri) -> V4L2Source:
    """``v4l2:///dev/video0`` or ``v4l2://0`` (the registry in edge/sources/__init__.py)."""
    target = source.target
    return V4L2Source(source.uri, int(target) if target.isdigit() else target, **source.options)
