"""Reading images from files or URLs with errors that name the image."""

from __future__ import annotations

import struct
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageError

# Larger images are refused before decoding, so one bad file cannot exhaust memory.
MAX_PIXELS = 50_000_000
URL_TIMEOUT_S = 10.0


def _read_bytes(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT_S) as response:
                return response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ImageError(f"{source}: cannot download image: {reason}") from exc
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{source}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{source}: cannot read: {exc.strerror or exc}") from exc


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, without decoding; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker in _JPEG_SOF:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _check_dimensions(data: bytes, source: str) -> None:
    """Reject images whose header declares an absurd size, before decoding them."""
    size = declared_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(f"{source}: image too large ({size[0]}x{size[1]}, limit {MAX_PIXELS} pixels)")


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array (grey and RGBA are converted)."""
    if not data:
        raise ImageError(f"{source}: empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise ImageError(f"{source}: truncated JPEG (no end-of-image marker)")
    _check_dimensions(data, source)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{source}: not a readable image (JPEG, PNG, BMP, WebP, ...)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(source: str | Path) -> np.ndarray:
    """Read an image file or http(s) URL as RGB uint8, or raise ImageError naming it."""
    source = str(source)
    return decode_image(_read_bytes(source), source)


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """An RGB uint8 image as JPEG bytes (empty if OpenCV cannot encode it)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 image as JPEG."""
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError(f"{path}: cannot write JPEG")
