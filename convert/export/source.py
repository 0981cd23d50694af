"""What a conversion starts from: the trained model, its labels, and the images it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.data.sampling import group_by_class, stratified_split
from convert.training.train import LABELS_FILE, find_run, load_labels, run_config
from edge.errors import SmartbinError
from edge.formats.bundle import MANIFEST_FILE
from edge.formats.dataset import LabelledImage, load_dataset
from edge.formats.labels import Label


def check_out(out: Path, force: bool) -> None:
    """``--out`` may be new, empty or an earlier bundle (replaced); anything else is a user's folder."""
    if not out.exists() or force:
        return
    if not out.is_dir():
        raise SmartbinError(f"--out {out}: exists and is not a folder; choose another path")
    if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise SmartbinError(
            f"--out {out}: exists and is not a bundle (no {MANIFEST_FILE}); nothing was changed. "
            "Choose another folder, or pass --force to replace it and everything in it"
        )


@dataclass
class Source:
    """What a conversion starts from: the model, its labels, and the images it was trained on."""

    model_file: Path
    labels: list[Label]
    train: list[LabelledImage]
    held_out: list[LabelledImage]
    name: str


def load_source(model: str | Path, data: str | None = None, name: str | None = None) -> Source:
    """The model, its labels and the same train/held-out split as training (``data``: another dataset)."""
    run_dir, model_file = find_run(Path(model))
    config = run_config(run_dir)
    data = data or config.get("data")
    if not data:
        raise SmartbinError(f"{model_file}: no training config beside it; pass --data for calibration and the gate")
    dataset = load_dataset(data)
    labels = load_labels(run_dir / LABELS_FILE) if (run_dir / LABELS_FILE).is_file() else dataset.labels
    # The same split as training, so the gate runs on images the model never saw.
    train, held_out = stratified_split(dataset.samples, config.get("val_fraction", 0.1), config.get("seed", 0))
    return Source(model_file, labels, train or held_out, held_out or train, name or run_dir.name)


def calibration_samples(samples: list[LabelledImage], n: int, seed: int) -> list[LabelledImage]:
    """Up to ``n`` training samples drawn evenly across classes."""
    rng = np.random.default_rng(seed)
    by_class = group_by_class(samples)
    pools = [list(rng.permutation(len(g))) for g in by_class.values()]
    groups = list(by_class.values())
    picked: list[LabelledImage] = []
    while len(picked) < min(n, len(samples)):
        for group, pool in zip(groups, pools):
            if pool and len(picked) < n:
                picked.append(group[pool.pop()])
    return picked
