"""Frame sources chosen by URI, as jetson-inference does:

``csi://0``, ``v4l2:///dev/video0`` (or ``/dev/video0``, or ``0``), ``rtsp://…``, ``http://…``,
``file://clip.mp4?loop=1&realtime=1``, ``dir://images/``, ``synthetic://?items=5&classes=4``.
Query parameters set the source's options (width, height, fps, loop, ...).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from edge.errors import ConfigError
from edge.sources.base import Frame, FrameSource, SourceError, SourceUri
from edge.sources.capture import Capture

__all__ = ["Capture", "Frame", "FrameSource", "SourceError", "SourceUri", "check_uri", "open_source", "SCHEMES"]


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


@dataclass(frozen=True)
class Scheme:
    """One kind of source: the file that makes it (``make(SourceUri) -> FrameSource``, imported only when such a
    source opens, so that a Pi never imports what a Jetson needs) and the query options it takes."""

    module: str
    options: dict[str, type]


# The registry: a config is checked against it, a source is made from it. A new camera is one file and one line.
REGISTRY: dict[str, Scheme] = {
    "csi": Scheme("edge.sources.csi", CAMERA_OPTIONS),
    "v4l2": Scheme("edge.sources.v4l2", {**CAMERA_OPTIONS, "fourcc": str}),
    "rtsp": Scheme("edge.sources.network", {}),
    "http": Scheme("edge.sources.network", {}),
    "https": Scheme("edge.sources.network", {}),
    "file": Scheme("edge.sources.file", {"loop": bool, "realtime": bool}),
    "dir": Scheme("edge.sources.directory", {"loop": bool}),
    "synthetic": Scheme(
        "edge.sources.synthetic",
        {
            **dict.fromkeys(("classes", "items", "empty", "present", "width", "height", "seed"), int),
            "loop": bool,
            "fps": float,
        },
    ),
}
SCHEMES = tuple(REGISTRY)


def check_uri(uri: str) -> SourceUri:
    """Parse a source URI against the registry; a bad one raises ConfigError saying what is allowed."""
    if uri.isdigit() or uri.startswith("/dev/video"):
        uri = f"v4l2://{uri}"
    parts = urlsplit(uri)
    if parts.scheme not in REGISTRY:
        raise ConfigError(f"{uri}: unknown source (allowed: {', '.join(s + '://' for s in SCHEMES)}, /dev/videoN or N)")
    options = _options(parts.query, REGISTRY[parts.scheme].options, uri)
    return SourceUri(uri, parts.scheme, parts.netloc + parts.path, options)


def open_source(uri: str) -> FrameSource:
    """Make (not open) the source a URI names; a bad URI raises ConfigError saying what is allowed."""
    checked = check_uri(uri)
    return importlib.import_module(REGISTRY[checked.scheme].module).make(checked)
