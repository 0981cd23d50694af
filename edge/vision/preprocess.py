"""Frame -> model input: region of interest, resize, centre crop. Nothing else.

Normalisation lives inside the model, so every variant takes these plain RGB pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.formats.dataset import LabelledImage
from edge.formats.images import read_image

# Resize the shorter side to size * 256 / 224 before cropping, as ResNet's ImageNet recipe does.
RESIZE_RATIO = 256 / 224


@dataclass(frozen=True)
class Roi:
    """Region of interest in fractions of the frame (the bin's drop zone)."""

    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0

    def crop(self, frame: np.ndarray) -> np.ndarray:
        fh, fw = frame.shape[:2]
        x0, y0 = int(self.x * fw), int(self.y * fh)
        x1, y1 = max(x0 + 1, int((self.x + self.w) * fw)), max(y0 + 1, int((self.y + self.h) * fh))
        return frame[y0:y1, x0:x1]


def resize_shorter(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resize so that the shorter side is ``shorter`` pixels, keeping the aspect ratio."""
    h, w = image.shape[:2]
    scale = shorter / min(h, w)
    if scale == 1.0:
        return image
    size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return image[top : top + height, left : left + width]


def prepare(frame: np.ndarray, height: int, width: int, roi: Roi | None = None) -> np.ndarray:
    """RGB frame -> (height, width, 3) uint8 model input: ROI, resize, centre crop."""
    if roi is not None:
        frame = roi.crop(frame)
    resized = resize_shorter(frame, round(max(height, width) * RESIZE_RATIO))
    return np.ascontiguousarray(center_crop(resized, height, width))


def tta_crops(image: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The seed's test-time augmentation: resize, then ``n`` random ``size`` crops (first one centred)."""
    resized = resize_shorter(image, round(size * RESIZE_RATIO))
    h, w = resized.shape[:2]
    crops = [center_crop(resized, size, size)]
    for _ in range(n - 1):
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crops.append(resized[top : top + size, left : left + size])
    return np.stack(crops)


def load_images(samples: list[LabelledImage], height: int, width: int) -> np.ndarray:
    """The device's input path on a dataset's images: decode, resize, centre crop -> (N, H, W, 3) uint8."""
    return np.stack([prepare(read_image(s.path), height, width) for s in samples])
