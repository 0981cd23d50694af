"""Synthetic scenes: an item of class k on a bin floor.

Shared by the synthetic dataset (convert/data/synth.py) and the synthetic camera
(edge/sources/synthetic.py), so that a model trained on one recognises the other.
Each class has its own shape and hue; position, scale, rotation, background and
noise vary, so the classes are learnable but not trivially memorised.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")


def class_colour(cls: int, num_classes: int) -> tuple[int, int, int]:
    """A saturated RGB colour, hues spread evenly over the classes."""
    r, g, b = colorsys.hsv_to_rgb((cls / max(num_classes, 1)) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def floor(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A muted, slightly graded background standing in for the bin's floor."""
    base = rng.integers(70, 150, size=3).astype(np.float32)
    ramp = np.linspace(-12.0, 12.0, width, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(base, (height, width, 3)) + ramp
    return np.clip(img, 0, 255).astype(np.uint8)


def empty_floor(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The empty bin as a fixed camera sees it: the same floor for a given seed."""
    return floor(height, width, np.random.default_rng(seed))


def draw_item(
    canvas: np.ndarray,
    cls: int,
    num_classes: int,
    rng: np.random.Generator,
    scale: float | None = None,
) -> np.ndarray:
    """Draw one item of class ``cls`` onto ``canvas`` (RGB uint8, modified in place)."""
    h, w = canvas.shape[:2]
    size = min(h, w)
    scale = float(rng.uniform(0.45, 0.75)) if scale is None else scale
    radius = max(4, int(size * scale / 2))
    cx = int(rng.integers(radius // 2 + w // 2 - w // 5, w // 2 + w // 5 - radius // 2 + 1))
    cy = int(rng.integers(radius // 2 + h // 2 - h // 5, h // 2 + h // 5 - radius // 2 + 1))
    colour = np.array(class_colour(cls, num_classes), dtype=np.float32)
    colour = tuple(int(c) for c in np.clip(colour * rng.uniform(0.85, 1.1), 0, 255))
    shape = SHAPES[cls % len(SHAPES)]
    angle = float(rng.uniform(0, 2 * np.pi))

    def polygon(n: int, r: float) -> np.ndarray:
        t = angle + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).astype(np.int32)

    if shape == "disc":
        cv2.circle(canvas, (cx, cy), radius, colour, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.fillPoly(canvas, [polygon(4, radius)], colour, cv2.LINE_AA)
    elif shape == "triangle":
        cv2.fillPoly(canvas, [polygon(3, radius)], colour, cv2.LINE_AA)
    elif shape == "cross":
        thick = max(2, radius // 3)
        for a in (angle, angle + np.pi / 2):
            dx, dy = int(radius * np.cos(a)), int(radius * np.sin(a))
            cv2.line(canvas, (cx - dx, cy - dy), (cx + dx, cy + dy), colour, thick, cv2.LINE_AA)
    elif shape == "ring":
        cv2.circle(canvas, (cx, cy), radius, colour, max(2, radius // 3), cv2.LINE_AA)
    else:  # bar
        dx, dy = int(radius * np.cos(angle)), int(radius * np.sin(angle))
        cv2.line(canvas, (cx - dx, cy - dy), (cx + dx, cy + dy), colour, max(3, radius // 2), cv2.LINE_AA)
    return canvas


def add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    """Sensor-like Gaussian noise."""
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render_sample(cls: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One training image: a random floor, one item of ``cls``, noise."""
    canvas = floor(size, size, rng)
    draw_item(canvas, cls, num_classes, rng)
    return add_noise(canvas, rng)
