"""Frame sources chosen by URI, as jetson-inference does:

``csi://0``, ``v4l2:///dev/video0`` (or ``/dev/video0``, or ``0``), ``rtsp://…``, ``http://…``,
``file://clip.mp4?loop=1&realtime=1``, ``dir://images/``, ``synthetic://?items=5&classes=4``.
Query parameters set the source's options (width, height, fps, loop, ...).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from edge.errors import ConfigError
from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.capture import Capture

__all__ = ["Capture", "Frame", "FrameSource", "SourceError", "open_source", "SCHEMES"]

SCHEMES = ("csi", "v4l2", "rtsp", "http", "https", "file", "dir", "synthetic")


def _options(query: str, allowed: dict[str, type], uri: str) -> dict:
    options: dict = {}
    for key, value in parse_qsl(query):
        if key not in allowed:
            raise ConfigError(f"{uri}: unknown option {key!r} (allowed: {', '.join(sorted(allowed)) or 'none'})")
        kind = allowed[key]
        try:
            options[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise ConfigError(f"{uri}: option {key}={value!r} is not a {kind.__name__}") from None
    return options


CAMERA_OPTIONS = {"width": int, "height": int, "fps": float}


def open_source(uri: str) -> FrameSource:
    """Make (not open) the source a URI names; a bad URI raises ConfigError saying what is allowed."""
    if uri.isdigit() or uri.startswith("/dev/video"):
        uri = f"v4l2://{uri}"
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme == "v4l2":
        from edge.sources.v4l2 import V4L2Source

        target = parts.netloc + parts.path
        device: str | int = int(target) if target.isdigit() else target
        return V4L2Source(uri, device, **_options(parts.query, {**CAMERA_OPTIONS, "fourcc": str}, uri))
    if scheme == "csi":
        from edge.sources.csi import JetsonCSISource, PiCameraSource, is_jetson

        index = int(parts.netloc or 0)
        cls = JetsonCSISource if is_jetson() else PiCameraSource
        return cls(uri, index, **_options(parts.query, CAMERA_OPTIONS, uri))
    if scheme in ("rtsp", "http", "https"):
        from edge.sources.network import NetworkSource

        return NetworkSource(uri)
    if scheme == "file":
        from edge.sources.file import FileSource

        return FileSource(
            uri, parts.netloc + parts.path, **_options(parts.query, {"loop": bool, "realtime": bool}, uri)
        )
    if scheme == "dir":
        from edge.sources.directory import DirectorySource

        return DirectorySource(uri, parts.netloc + parts.path, **_options(parts.query, {"loop": bool}, uri))
    if scheme == "synthetic":
        from edge.sources.synthetic import SyntheticSource

        allowed = {
            "classes": int,
            "items": int,
            "empty": int,
            "present": int,
            "width": int,
            "height": int,
            "seed": int,
            "loop": bool,
            "fps": float,
        }
        return SyntheticSource(uri, **_options(parts.query, allowed, uri))
    raise ConfigError(f"{uri}: unknown source (allowed: {', '.join(s + '://' for s in SCHEMES)}, /dev/videoN or N)")
