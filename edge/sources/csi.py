"""CSI cameras (`csi://0`): picamera2 on a Raspberry Pi, a GStreamer nvarguscamerasrc pipeline on a Jetson."""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.sources.base import FrameSource, SourceError, SourceUri
from edge.sources.opencv import OpenCVSource


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


class PiCameraSource(FrameSource):
    """picamera2, RGB888 at the requested size; frames arrive as RGB already."""

    def __init__(self, uri: str, index: int = 0, width: int = 640, height: int = 480, fps: float = 30):
        super().__init__(uri)
        self.index, self.size, self.fps = index, (width, height), fps
        self.camera = None
        self._array: np.ndarray | None = None
        self._stamp_ns: int | None = None

    def open(self) -> None:
        try:
            Picamera2 = importlib.import_module("picamera2").Picamera2  # the one picamera2 boundary
        except ImportError as exc:
            # "No module named 'libcamera'" means a venv without the OS's camera bindings, not a missing pip package
            raise SourceError(
                f"{self.uri}: picamera2 cannot be imported ({exc}): on Raspberry Pi OS run "
                "'sudo apt install python3-picamera2' and create the venv with --system-site-packages"
            ) from exc
        except ValueError as exc:
            # "numpy.dtype size changed": an OS module (simplejpeg) built for the OS's numpy 1.x, under the
            # venv's numpy 2 (raspberrypi/picamera2 #1088, #1211)
            raise SourceError(
                f"{self.uri}: picamera2 cannot be imported ({exc}): an OS package was built for another numpy "
                "than this venv's. Run 'sudo systemd/install.sh' again (it reinstalls simplejpeg in the venv), "
                "or: <venv>/bin/pip install --force-reinstall --no-deps simplejpeg"
            ) from exc
        try:
            camera = Picamera2(self.index)
            config = camera.create_video_configuration(
                main={"size": self.size, "format": "RGB888"}, controls={"FrameRate": self.fps}, buffer_count=2
            )
            camera.configure(config)
            camera.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(
                f"{self.uri}: camera not found or busy ({exc}); is it connected and enabled, "
                "and is no other process using it?"
            ) from exc
        self.camera = camera

    def grab(self) -> bool:
        try:
            # One request for the pixels and their metadata: the sensor's own timestamp of this very frame.
            request = self.camera.capture_request()
            try:
                # picamera2's "RGB888" is B,G,R in memory order; reverse to RGB.
                self._array = request.make_array("main")[..., :3][..., ::-1]
                self._stamp_ns = request.get_metadata().get("SensorTimestamp")
            finally:
                request.release()
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"{self.uri}: capture failed ({exc})") from exc
        return True

    def timestamp_ms(self) -> float | None:
        """The sensor's timestamp (libcamera's SensorTimestamp, ns): a still scene still has new frames."""
        return self._stamp_ns / 1e6 if self._stamp_ns else None

    def retrieve(self) -> np.ndarray:
        return np.ascontiguousarray(self._array)

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None


class JetsonCSISource(OpenCVSource):
    api = cv2.CAP_GSTREAMER

    def __init__(self, uri: str, index: int = 0, width: int = 640, height: int = 480, fps: float = 30):
        super().__init__(uri, jetson_pipeline(index, width, height, fps))

    def hint(self) -> str:
        if not has_gstreamer(cv2.getBuildInformation()):
            return (
                f"this OpenCV ({Path(cv2.__file__).parent}) has no GStreamer: a pip wheel (opencv-python*) "
                "shadows JetPack's. Remove it from the venv (pip uninstall opencv-python-headless "
                "opencv-python) so that JetPack's python3-opencv serves; smartbin[jetson] installs none"
            )
        return "is nvargus-daemon running (systemctl status nvargus-daemon), and /tmp/argus_socket in reach?"


def has_gstreamer(build_information: str) -> bool:
    """Whether an OpenCV build (its ``cv2.getBuildInformation()``) reads GStreamer pipelines."""
    for line in build_information.splitlines():
        name, _, value = line.strip().partition(":")
        if name == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def jetson_pipeline(index: int, width: int, height: int, fps: float) -> str:
    return (
        f"nvarguscamerasrc sensor-id={index} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={int(fps)}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR "
        "! appsink drop=true max-buffers=1"
    )


def make(source: SourceUri) -> FrameSource:
    """``csi://N``: Argus through GStreamer on a Jetson, picamera2 elsewhere."""
    cls = JetsonCSISource if is_jetson() else PiCameraSource
    return cls(source.uri, int(urlsplit(source.uri).netloc or 0), **source.options)
