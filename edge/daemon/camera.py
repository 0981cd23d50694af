"""The configured camera as the loop sees it: a capture thread (edge/sources/capture.py), the newest frame
taken from it, and whether the camera counts as lost."""

from __future__ import annotations

import time

from edge.config import Config
from edge.models.build import make_capture
from edge.sources import Capture, Frame

CAMERA_LOST_S = 3.0  # no frame for this long: camera_lost on the retained status


class Camera:
    """The source's capture thread and the newest frame the loop took from it."""

    def __init__(self, config: Config):
        self.uri = config.source.uri
        self.capture: Capture = make_capture(config)
        self.last_id = -1
        self.last_frame: Frame | None = None
        self.last_healthy = time.monotonic()  # when the last frame arrived (at start: the start)

    def start(self) -> None:
        self.capture.start()

    def stop(self) -> None:
        self.capture.stop()

    def replace(self, config: Config) -> None:
        """A reload's new source: the old capture stops, the new one numbers its frames from 1."""
        self.capture.stop()
        self.uri, self.capture, self.last_id = config.source.uri, make_capture(config), -1
        self.capture.start()

    def next_frame(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` s (None: none came)."""
        frame = self.capture.next_frame(self.last_id, timeout=timeout)
        if frame is not None:
            self.last_id, self.last_frame, self.last_healthy = frame.frame_id, frame, time.monotonic()
        return frame

    @property
    def ended(self) -> bool:
        """A finite source (a clip, a folder) has given its last frame."""
        return self.capture.ended

    def quiet_s(self) -> float:
        """Seconds since the last frame."""
        return time.monotonic() - self.last_healthy

    def lost(self) -> bool:
        """Reconnecting, or no frame for CAMERA_LOST_S."""
        quiet = self.quiet_s() > CAMERA_LOST_S and not self.capture.ended
        return self.capture.health.state == "reconnecting" or quiet

    def source(self) -> dict:
        """For the status: the URI, the capture's state and its last error."""
        health = self.capture.health
        return {"uri": self.uri, "state": health.state, "error": health.error}
