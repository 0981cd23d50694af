"""`smartbin dataset check` and the training split, on the dataset format of edge/formats/dataset.py.

No TensorFlow here: `smartbin dataset check` runs anywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ImageError, SmartbinError
from edge.formats.classbins import BINS_FILE
from edge.formats.dataset import RULES_FILE, Dataset, LabelledImage, is_seed_format, load_dataset
from edge.formats.images import read_image


def group_by_class(samples: list[LabelledImage]) -> dict[int, list[LabelledImage]]:
    """The samples of each class, in their order, classes in order of first appearance."""
    by_class: dict[int, list[LabelledImage]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    return by_class


def stratified_split(
    samples: list[LabelledImage], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Split each class ``1 - val_fraction : val_fraction`` (at least one validation image per class)."""
    rng = np.random.default_rng(seed)
    by_class = group_by_class(samples)
    train: list[LabelledImage] = []
    val: list[LabelledImage] = []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    return train, val


def even_class_weights(labels: list[int] | np.ndarray, classes: int) -> dict[int, float]:
    """Keras ``class_weight`` that weighs every class as much in the loss, however many images it has: 20
    pulled samples of a new item beside 300 of each old class are otherwise outvoted until the model never
    names it. Classes with no image get none."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    return {c: float(len(labels) / (classes * n)) for c, n in enumerate(counts) if n}


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
                "bins": {
                    lab.name: None if lab.name in self.dataset.unmapped else lab.bin for lab in self.dataset.labels
                },
                "bin_sources": self.dataset.bin_sources,
            },
            ensure_ascii=False,
            indent=2,
        )


def check_dataset(root: str | Path) -> CheckReport:
    """Load the dataset and additionally decode every image; report every broken item."""
    dataset = load_dataset(root)
    problems = dataset.bin_problems() + dataset.problems
    good: list[LabelledImage] = []
    for sample in dataset.samples:
        try:
            read_image(sample.path)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        good.append(sample)
    dataset.samples = good
    return CheckReport(dataset, problems)


def _quotas(counts: dict[int, int], n: int) -> dict[int, int]:
    """``n`` split over the classes in proportion to their counts (largest remainders), none above its count."""
    total = sum(counts.values())
    exact = {label: n * count / total for label, count in counts.items()}
    quotas = {label: int(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda k: exact[k] - quotas[k], reverse=True)[: n - sum(quotas.values())]:
        quotas[label] += 1
    return {label: min(quota, counts[label]) for label, quota in quotas.items()}


def write_samples(dataset: Dataset, samples: list[LabelledImage], out: Path, link: bool = False) -> None:
    """``samples`` of ``dataset`` as a dataset in its format at ``out``, copied or, with ``link``, as
    symbolic links; its rules and bins files go along."""
    import shutil

    seed_format = is_seed_format(dataset.root)

    def put(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve()) if link else shutil.copy2(source, target)

    for sample in samples:
        image = sample.path
        if seed_format:  # img_N.jpg beside img_N.txt, whose one line names it and its label
            put(image, out / image.name)
            line = f"{image.name}, {dataset.labels[sample.label].index}\n"
            (out / image.with_suffix(".txt").name).write_text(line, encoding="utf-8")
        else:
            put(image, out / image.parent.name / image.name)
    for name in (RULES_FILE, BINS_FILE):
        if (dataset.root / name).is_file():
            shutil.copy2(dataset.root / name, out / name)


def new_folder(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a folder to write a dataset to: new, or empty."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SmartbinError(f"{flag} {out}: exists and is not empty; choose a new folder")
    return out


def sample_dataset(root: str | Path, out: str | Path, n: int, seed: int = 0, link: bool = False) -> dict[str, int]:
    """Write ``n`` images of the dataset at ``root`` to ``out`` in the same format (the seed's sample.py,
    stratified: each class keeps its share), copied or, with ``link``, as symbolic links. Returns the
    count per class name."""
    dataset = load_dataset(root)
    out = new_folder(out)
    if not 0 < n <= len(dataset.samples):
        raise SmartbinError(f"--n {n}: choose 1 to {len(dataset.samples)} (the images in {dataset.root})")
    rng = np.random.default_rng(seed)
    by_class = group_by_class(dataset.samples)
    quotas = _quotas({label: len(group) for label, group in by_class.items()}, n)
    drawn = [
        group[index]
        for label, group in by_class.items()
        for index in sorted(rng.choice(len(group), quotas[label], replace=False))
    ]
    write_samples(dataset, drawn, out, link)
    return {dataset.labels[label].name: count for label, count in sorted(quotas.items()) if count}
