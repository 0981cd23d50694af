"""Real image sets that registry packages ship, written as class folders: what the quantization tests
train and convert on (no one here made these images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.formats.labels import BINS


def write_bins(out: Path, names: list[str]) -> None:
    """A bins.yaml that spreads the classes over the four bins (as a user would name where each goes)."""
    import yaml

    (out / "bins.yaml").write_text(yaml.safe_dump({n: BINS[i % len(BINS)] for i, n in enumerate(names)}))


# scikit-image's own photographs: materials (brick, grass, gravel), scenes, a cat, a microscope slide,
# a retina, the deep sky. A class is one photograph; an image is a patch of it at a random place and scale.
PHOTOS = ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry", "retina")
PHOTOS += ("hubble_deep_field",)


def load_digit_images(side: int = 48, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy of the UCI handwritten digits (1,797 scans, 10 classes) as (RGB uint8 images at
    ``side`` px, labels)."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [
        cv2.cvtColor(
            cv2.resize((image * 255 / 16).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC),
            cv2.COLOR_GRAY2RGB,
        )
        for image in digits.images[:count]
    ]
    return np.stack(images), digits.target[:count]


def write_digits(out: Path, side: int = 48) -> Path:
    """The digits as class folders of PNG files."""
    import cv2

    images, labels = load_digit_images(side)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = out / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    write_bins(out, [f"digit_{d}" for d in range(10)])
    return out


def write_photo_patches(
    out: Path, per_class: int = 60, side: int = 48, seed: int = 0, folders: dict[str, str] | None = None
) -> Path:
    """Patches of scikit-image's photographs (10 classes): each a random square of 1/6 to 1/3 of the
    photograph's shorter side, resized to ``side`` px. ``folders``: class folder -> photograph, for another
    dataset's layout (no bins.yaml then: that layout's own rules apply)."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    for name, source in (folders or {p: p for p in PHOTOS}).items():
        photo = getattr(data, source)()
        photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB) if photo.ndim == 2 else photo[..., :3]
        height, width = photo.shape[:2]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            crop = int(rng.integers(min(height, width) // 6, min(height, width) // 3 + 1))
            y, x = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
            patch = cv2.resize(photo[y : y + crop, x : x + crop], (side, side), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(patch, cv2.COLOR_RGB2BGR))
    if folders is None:
        write_bins(out, list(PHOTOS))
    return out
