"""How new an image looks to a trained run: the cosine distance of its pooled backbone features to the nearest
image the run was trained on (features.py's cache and ``novelty``). `samples pull --rank-with` ranks the
unreviewed samples by it; `smartbin review --rank-with` sorts the review station's samples by it too. Both
write the ranking beside the images (NOVELTY_FILE)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from convert.data.pull import NOVELTY_FILE
from convert.training.features import FeatureCache, embeddings, novelty
from edge.errors import SmartbinError
from edge.formats.dataset import LabelledImage, load_dataset


def run_model(run: str | Path):
    """(model, image size, training dataset folders) of a run folder."""
    from convert.training.model import load_model
    from convert.training.train import find_run, run_config

    run_dir, model_file = find_run(Path(run))
    model = load_model(model_file)
    return model, int(model.input_shape[1]), run_config(run_dir).get("data")


def distances(run: str | Path, images: list[Path], cache: str | None = None) -> np.ndarray:
    """Each image's distance to the run's training images (0: one it has seen)."""
    model, size, data = run_model(run)
    if not data:
        raise SmartbinError(f"--rank-with {run}: no training config naming its data")
    with tempfile.TemporaryDirectory(prefix="smartbin-features-") as tmp:
        features = FeatureCache(cache or tmp, model, size, 32)  # one extractor and weights hash for both sets
        known = embeddings(features, load_dataset(data).samples)
        return novelty(known, embeddings(features, [LabelledImage(path, 0) for path in images]))


def rank(run: str | Path, folder: Path, images: list[Path], labels: list[str], cache: str | None = None) -> list[dict]:
    """Write ``folder``'s novelty.json: the images with the model's label and their distance, most novel
    first; the rows."""
    distance = distances(run, images, cache)
    rows = [
        {"image": image.name, "label": label, "distance": round(float(d), 4)}
        for image, label, d in sorted(zip(images, labels, distance), key=lambda row: -row[2])
    ]
    (folder / NOVELTY_FILE).write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return rows
