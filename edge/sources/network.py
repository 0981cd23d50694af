"""Network cameras: `rtsp://…`, `http://…` (MJPEG or HLS), read through OpenCV's FFmpeg backend."""

from __future__ import annotations

import cv2

from edge.sources.base import SourceUri
from edge.sources.opencv import OpenCVSource

# A stream that stops must fail a read within seconds, so that capture reconnects and reports it;
# FFmpeg's own defaults wait for a TCP timeout (tens of seconds) or forever.
OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000


class NetworkSource(OpenCVSource):
    api = cv2.CAP_FFMPEG
    params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)

    def __init__(self, uri: str):
        super().__init__(uri, uri)

    def hint(self) -> str:
        return "is the camera reachable from this device, and are the address and credentials right?"


def make(source: SourceUri) -> NetworkSource:
    """``rtsp://``, ``http://``, ``https://``: a stream OpenCV opens."""
    return NetworkSource(source.uri)
