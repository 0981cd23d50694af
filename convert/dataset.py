"""`smartbin dataset check` and the training split, on the dataset format of edge/dataset.py.

No TensorFlow here: `smartbin dataset check` runs anywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.dataset import Dataset, Sample, load_dataset
from edge.errors import ImageError
from edge.images import read_image


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split each class ``1 - val_fraction : val_fraction`` (at least one validation image per class)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    return train, val


@dataclass
class CheckReport:
    """What `smartbin dataset check` found."""

    dataset: Dataset
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def balance(self) -> tuple[dict[str, int], dict[str, int]]:
        counts = self.dataset.class_counts()
        per_class = {lab.name: counts.get(lab.index, 0) for lab in self.dataset.labels}
        per_bin: Counter = Counter()
        for lab in self.dataset.labels:
            per_bin[lab.bin] += counts.get(lab.index, 0)
        return per_class, dict(per_bin)

    def to_json(self) -> str:
        per_class, per_bin = self.balance()
        return json.dumps(
            {
                "ok": self.ok,
                "images": len(self.dataset.samples),
                "problems": self.problems,
                "per_class": per_class,
                "per_bin": per_bin,
            },
            ensure_ascii=False,
            indent=2,
        )


def check_dataset(root: str | Path) -> CheckReport:
    """Load the dataset and additionally decode every image; report every broken item."""
    dataset = load_dataset(root)
    problems = list(dataset.problems)
    good: list[Sample] = []
    for sample in dataset.samples:
        try:
            read_image(sample.path)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        good.append(sample)
    dataset.samples = good
    return CheckReport(dataset, problems)
