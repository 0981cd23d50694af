"""The dataset format, read: the seed's (img_N.jpg + img_N.txt + rules) or class-per-folder trees
(each folder's bin by name: edge/formats/classbins.py).

A shared format: the workstation trains on it, the device's tools measure accuracy on it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import DatasetError
from edge.formats.classbins import RULES_SOURCE, bin_problems, resolve
from edge.formats.labels import Label, load_rules
from edge.system.paths import default_rules_path

log = logging.getLogger(__name__)

RULES_FILE = "garbage_classify_rule.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class LabelledImage:
    """One image and its class index."""

    path: Path
    label: int


@dataclass
class Dataset:
    """Samples with their labels; ``problems`` lists items that could not be used, ``bin_sources`` where
    each class's bin came from (by class name) and ``unmapped`` the classes no source gave a bin."""

    root: Path
    labels: list[Label]
    samples: list[LabelledImage]
    problems: list[str] = field(default_factory=list)
    bin_sources: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def class_counts(self) -> Counter:
        return Counter(s.label for s in self.samples)

    def bin_problems(self) -> list[str]:
        """Why a model trained on it would sort badly (classes without a bin, one bin for all); [] if none.
        Bins a rules file states (the seed's format, pulled field samples) are the user's word: not judged."""
        stated = all(source == RULES_SOURCE for source in self.bin_sources.values())
        return [] if stated else bin_problems(self.root, self.labels, self.unmapped)


def _find_rules(root: Path) -> Path:
    for candidate in (root / RULES_FILE, root.parent / RULES_FILE):
        if candidate.is_file():
            return candidate
    return default_rules_path()


def is_seed_format(root: Path) -> bool:
    """The seed's layout (a label file beside each image), not class folders."""
    return any(root.glob("*.txt"))


def _load_seed(root: Path) -> Dataset:
    rules_path = _find_rules(root)
    labels = load_rules(rules_path)
    samples: list[LabelledImage] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for txt in sorted(root.glob("*.txt")):
        try:
            line = txt.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{txt}: cannot read label file: {exc}")
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            problems.append(f"{txt}: expected one line '<image>, <label index>', got {line[:60]!r}")
            continue
        name, index_text = parts
        try:
            index = int(index_text)
        except ValueError:
            problems.append(f"{txt}: label {index_text!r} is not an integer")
            continue
        if not 0 <= index < len(labels):
            problems.append(f"{txt}: label {index} out of range of {rules_path.name} (0..{len(labels) - 1})")
            continue
        if name in seen:
            problems.append(f"{txt}: duplicate image name {name!r} (also in {seen[name].name})")
            continue
        seen[name] = txt
        image = root / name
        if not image.is_file():
            problems.append(f"{txt}: image {name!r} is missing")
            continue
        samples.append(LabelledImage(image, index))
    return Dataset(root, labels, samples, problems)


def _load_folders(root: Path) -> Dataset:
    """Class-per-folder tree, the classes in folder-name order; each folder's bin found by name."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root}: no label files (*.txt) and no class folders found")
    rules = root / RULES_FILE
    classes = resolve([f.name for f in folders], root, load_rules(rules) if rules.is_file() else None)
    labels = [Label(i, c.name, c.bin or "other") for i, c in enumerate(classes)]
    samples = [
        LabelledImage(path, index)
        for index, folder in enumerate(folders)
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    sources = {c.name: c.source for c in classes}
    return Dataset(root, labels, samples, [], sources, [c.name for c in classes if c.bin is None])


def load_dataset(root: str | Path | list[str | Path]) -> Dataset:
    """Load a dataset in the seed format or as class folders; several folders are merged by label name."""
    if isinstance(root, (list, tuple)):
        return merge([load_dataset(r) for r in root])
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    for sub in ("train_data_v2", "train_data"):  # the seed's layout nests the images
        if (root / sub).is_dir() and not is_seed_format(root):
            root = root / sub
    if is_seed_format(root):
        dataset = _load_seed(root)
        dataset.bin_sources = {lab.name: RULES_SOURCE for lab in dataset.labels}
    else:
        dataset = _load_folders(root)
    if not dataset.samples:
        raise DatasetError(f"{root}: no usable images ({len(dataset.problems)} problems)")
    return dataset


def merge(datasets: list[Dataset]) -> Dataset:
    """One dataset from several: the first one's labels keep their indices, labels new to it follow.

    A label is matched by its name, so field samples pulled from a device (`smartbin samples pull`)
    add to the classes of the original training set, and a corrected name the model never had
    becomes a new class.
    """
    labels: list[Label] = []
    index: dict[str, int] = {}
    samples: list[LabelledImage] = []
    problems: list[str] = []
    sources: dict[str, str] = {}
    unmapped: list[str] = []
    for dataset in datasets:
        for name in dataset.unmapped:
            if name not in index and name not in unmapped:
                unmapped.append(name)
        sources = {**dataset.bin_sources, **sources}
        for label in dataset.labels:
            if label.name not in index:
                index[label.name] = len(labels)
                labels.append(Label(len(labels), label.name, label.bin))
            elif labels[index[label.name]].bin != label.bin:
                problems.append(
                    f"{dataset.root}: {label.name!r} goes to {label.bin}, but to "
                    f"{labels[index[label.name]].bin} in an earlier dataset (kept)"
                )
        names = [lab.name for lab in dataset.labels]
        samples += [LabelledImage(s.path, index[names[s.label]]) for s in dataset.samples]
        problems += dataset.problems
    return Dataset(datasets[0].root, labels, samples, problems, sources, unmapped)
