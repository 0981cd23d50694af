"""Network cameras: `rtsp://…`, `http://…` (MJPEG or HLS), read through OpenCV's FFmpeg backend."""

from __future__ import annotations

import cv2

from edge.sources.opencv import OpenCVSource


class NetworkSource(OpenCVSource):
    api = cv2.CAP_FFMPEG

    def __init__(self, uri: str):
        super().__init__(uri, uri)

    def hint(self) -> str:
        return "is the camera reachable from this device, and are the address and credentials right?"
