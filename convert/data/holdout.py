"""`smartbin dataset split`: a stratified hold-out that shares no image with training, nor a near copy of one.

Images are one item when their bytes are equal (sha256) or when their perceptual hashes (pHash, 64 bits:
is each of the 8x8 lowest frequencies of a 32x32 grey thumbnail's DCT above their median) differ in few
bits: a resized, recompressed or brightened copy of a photo. (On scikit-image's photographs such copies
differ in 0-6 bits, different patches of one photograph in 14 or more; dHash mixed the two.) An item's
images all go to one side, so the hold-out measures photos the model never saw. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from convert.data.sampling import new_folder, write_samples
from edge.errors import SmartbinError
from edge.formats.dataset import LabelledImage, load_dataset
from edge.formats.images import declared_size

REDUCED = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash(data: bytes) -> int | None:
    """The 64-bit perceptual hash of an encoded image (None when it does not decode)."""
    size = declared_size(data)
    # JPEG decodes at 1/2, 1/4 or 1/8 for a fraction of the cost: enough pixels for a 32x32 thumbnail
    factor = next((f for f in (8, 4, 2) if size and min(size) // f >= 64), 1)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[factor])
    if grey is None:
        return None
    low = cv2.dct(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32))[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) is left out of the median
    return int(np.packbits(bits).view(">u8")[0])


def _near_pairs(hashes: np.ndarray, near: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most ``near`` bits."""
    as_bytes = hashes.astype(">u8").view(np.uint8).reshape(-1, 8)
    pairs = []
    for start in range(0, len(hashes), 256):  # 256 rows at a time, each against itself and what follows
        xor = as_bytes[start : start + 256, None, :] ^ as_bytes[None, start:, :]
        distance = _POPCOUNT[xor].sum(axis=2, dtype=np.uint16)
        for i, j in zip(*np.nonzero(distance <= near)):
            if i < j:  # j counts from ``start`` too: each pair once, no image with itself
                pairs.append((start + int(i), start + int(j)))
    return pairs


@dataclass
class Items:
    """Which images are one item: ``item[k]`` for image k, with how many were joined by which rule."""

    item: list[int]
    exact: int
    near: int


def find_items(paths: list[Path], near: int = 8) -> Items:
    """Group images into items: equal bytes, or (``near`` >= 0) perceptual hashes within ``near`` bits."""
    parent = list(range(len(paths)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(a: int, b: int) -> bool:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        return ra != rb

    first: dict[str, int] = {}
    hashed: list[tuple[int, int]] = []
    exact = 0
    for k, path in enumerate(paths):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in first:
            exact += join(first[digest], k)
            continue
        first[digest] = k
        if near >= 0 and (value := phash(data)) is not None:
            hashed.append((k, value))
    joined = 0
    if hashed:
        index = [k for k, _ in hashed]
        values = np.array([v for _, v in hashed], dtype=np.uint64)
        joined = sum(join(index[i], index[j]) for i, j in _near_pairs(values, near))
    return Items([root(k) for k in range(len(paths))], exact, joined)


def holdout_split(
    samples: list[LabelledImage], item: list[int], fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Per class, whole items drawn (by ``seed``) into the hold-out until it holds ``fraction`` of the
    class's images; a class of one item stays in training. An item's class is its first image's."""
    members: dict[int, list[LabelledImage]] = {}
    for sample, k in zip(samples, item):
        members.setdefault(k, []).append(sample)
    by_class: dict[int, list[int]] = {}
    for k, group in members.items():
        by_class.setdefault(group[0].label, []).append(k)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in sorted(by_class):
        items = by_class[label]
        if len(items) < 2:
            continue
        target = max(1, round(fraction * sum(len(members[k]) for k in items)))
        taken = 0
        for k in (items[i] for i in rng.permutation(len(items))[:-1]):  # at least one item stays to train on
            if taken >= target:
                break
            held.add(k)
            taken += len(members[k])
    train = [s for s, k in zip(samples, item) if k not in held]
    return train, [s for s, k in zip(samples, item) if k in held]


@dataclass
class SplitResult:
    """What `dataset split` wrote: images per side, duplicates kept together, images in two classes."""

    train: int
    holdout: int
    exact: int
    near: int
    conflicts: int


def split_dataset(
    root: str | Path, out: str | Path, fraction: float = 0.1, seed: int = 0, link: bool = False, near: int = 8
) -> SplitResult:
    """Write ``out/train`` and ``out/holdout`` in the dataset's format (see the module's docstring)."""
    if not 0 < fraction < 1:
        raise SmartbinError(f"--holdout {fraction}: choose a share between 0 and 1, e.g. 0.1")
    if near > 32:
        raise SmartbinError(f"--near {near}: at most 32 of the 64 bits (8 finds copies; -1: exact copies only)")
    dataset = load_dataset(root)
    out = new_folder(out)
    items = find_items([s.path for s in dataset.samples], near)
    labels_of: dict[int, set[int]] = {}
    for sample, k in zip(dataset.samples, items.item):
        labels_of.setdefault(k, set()).add(sample.label)
    conflicts = sum(1 for s, k in zip(dataset.samples, items.item) if len(labels_of[k]) > 1)
    train, holdout = holdout_split(dataset.samples, items.item, fraction, seed)
    write_samples(dataset, train, out / "train", link)
    write_samples(dataset, holdout, out / "holdout", link)
    return SplitResult(len(train), len(holdout), items.exact, items.near, conflicts)
