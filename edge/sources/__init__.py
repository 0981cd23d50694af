"""Frame sources chosen by URI, as jetson-inference does:

``csi://0``, ``v4l2:///dev/video0`` (or ``/dev/video0``, or ``0``), ``rtsp://…``, ``http://…``,
``file://clip.mp4?loop=1&realtime=1``, ``dir://images/``, ``synthetic://?items=5&classes=4``.
Query parameters set the source's options (width, height, fps, loop, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from edge.errors import ConfigError
from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.capture import Capture

__all__ = ["Capture", "Frame", "FrameSource", "SourceError", "check_uri", "open_source", "SCHEMES"]


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
# scheme -> the query options it takes: the registry a config is checked against (nothing is built)
OPTIONS: dict[str, dict[str, type]] = {
    "csi": CAMERA_OPTIONS,
    "v4l2": {**CAMERA_OPTIONS, "fourcc": str},
    "rtsp": {},
    "http": {},
    "https": {},
    "file": {"loop": bool, "realtime": bool},
    "dir": {"loop": bool},
    "synthetic": {
        **dict.fromkeys(("classes", "items", "empty", "present", "width", "height", "seed"), int),
        "loop": bool,
        "fps": float,
    },
}
SCHEMES = tuple(OPTIONS)


@dataclass(frozen=True)
class SourceUri:
    """A checked source URI: its scheme, what it points at and its options."""

    uri: str
    scheme: str
    target: str
    options: dict


def check_uri(uri: str) -> SourceUri:
    """Parse a source URI against the registry; a bad one raises ConfigError saying what is allowed."""
    if uri.isdigit() or uri.startswith("/dev/video"):
        uri = f"v4l2://{uri}"
    parts = urlsplit(uri)
    if parts.scheme not in OPTIONS:
        raise ConfigError(f"{uri}: unknown source (allowed: {', '.join(s + '://' for s in SCHEMES)}, /dev/videoN or N)")
    options = _options(parts.query, OPTIONS[parts.scheme], uri)
    return SourceUri(uri, parts.scheme, parts.netloc + parts.path, options)


def open_source(uri: str) -> FrameSource:
    """Make (not open) the source a URI names; a bad URI raises ConfigError saying what is allowed."""
    checked = check_uri(uri)
    scheme, target, options, uri = checked.scheme, checked.target, checked.options, checked.uri
    if scheme == "v4l2":
        from edge.sources.v4l2 import V4L2Source

        return V4L2Source(uri, int(target) if target.isdigit() else target, **options)
    if scheme == "csi":
        from edge.sources.csi import JetsonCSISource, PiCameraSource, is_jetson

        cls = JetsonCSISource if is_jetson() else PiCameraSource
        return cls(uri, int(urlsplit(uri).netloc or 0), **options)
    if scheme in ("rtsp", "http", "https"):
        from edge.sources.network import NetworkSource

        return NetworkSource(uri)
    if scheme == "file":
        from edge.sources.file import FileSource

        return FileSource(uri, target, **options)
    if scheme == "dir":
        from edge.sources.directory import DirectorySource

        return DirectorySource(uri, target, **options)
    from edge.sources.synthetic import SyntheticSource

    return SyntheticSource(uri, **options)
