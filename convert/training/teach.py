"""`smartbin head train`: teach the bins a new item in a minute (issue 52). The bins serve a bundle in two parts;
each sample they kept carries the serving backbone's features (edge/wire/features.py), and the answers given at
the review station name what each item was. A new head is trained on those features and on the training set's,
which go through the same backbone once and are cached by image and backbone (a second teach passes no image
through it): a few seconds of dense layers on a CPU, not a training run. The new bundle shares every backbone file
with the serving one, so `smartbin bundle pack --head-only` ships its head alone, and it goes through the
hold-out gate (edge/fleet/gate.py) before it may go out."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.data.sampling import even_class_weights
from convert.export.split import write_head
from edge.errors import SmartbinError
from edge.formats.bundle import MANIFEST_FILE, AcceptanceFile, Bundle, LabelEntry, sha256_file
from edge.formats.classbins import BINS_FILE, normalise, read_bins_file
from edge.formats.dataset import LabelledImage, load_dataset
from edge.formats.head import Head
from edge.runtime import open_engine
from edge.system.atomic import link_or_copy, write_atomic
from edge.vision.preprocess import load_images
from edge.wire.payloads import Sample

log = logging.getLogger(__name__)

MIN_EXAMPLES = 5  # answered samples a new class needs


@dataclass
class Taught:
    """What a teach made and what it took."""

    bundle: Path
    added: list[str]
    examples: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    computed: int = 0  # training images passed through the backbone (0: all cached)
    variant: str = "int8"  # the backbone variant the bins run, whose features it was trained on


def backbone_features(bundle: Bundle, variant: str, images: list[Path], cache: Path) -> tuple[np.ndarray, int]:
    """The serving backbone's features of ``images`` (the device's engine and preprocessing), cached in
    ``cache`` by the backbone file's sha256 and each image's: (features, images that were not cached)."""
    entry = bundle.manifest.variants[variant]
    file = cache / f"backbone-{entry.sha256[:16]}.npz"
    known: dict[str, np.ndarray] = {}
    if file.is_file():
        with np.load(file) as stored:
            known = dict(zip(stored["digests"].tolist(), stored["features"]))
    digests = [sha256_file(path) for path in images]
    missing = sorted({d: p for d, p in zip(digests, images) if d not in known}.items())
    if missing:
        engine = open_engine(bundle, "auto", variant).backbone
        spec = bundle.manifest.input
        for digest, path in missing:
            image = load_images([LabelledImage(path, 0)], spec.height, spec.width)
            known[digest] = engine.infer(image)[0].astype(np.float16)
        cache.mkdir(parents=True, exist_ok=True)
        keys, out = sorted(known), io.BytesIO()
        np.savez(out, digests=np.array(keys), features=np.stack([known[k] for k in keys]))
        write_atomic(file, out.getvalue())
    return np.stack([known[d] for d in digests]).astype(np.float32), len(missing)


def answered_features(folder: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per backbone (its file's sha256): (answered label, features) of each sample in the review folder answered
    as an item (a sample of another backbone says nothing about this one)."""
    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            sample = Sample.model_validate_json(path.read_bytes())
        except ValueError as exc:
            log.warning("%s: not a sample (%s)", path, exc)
            continue
        answer, features = sample.correction, sample.features
        if answer is None or answer.verdict != "item" or not answer.label or features is None:
            continue
        found.setdefault(features.backbone, []).append((answer.label, features.values()))
    return found


def serving_variant(bundle: Bundle, answered: dict[str, list]) -> str:
    """The variant whose backbone made most of the answered samples' features (the one the bins run: int8 on
    a CPU, onnx on a Jetson), else int8, else the bundle's first."""
    by_sha = {entry.sha256: name for name, entry in bundle.manifest.variants.items()}
    counted = sorted(((len(rows), by_sha[sha]) for sha, rows in answered.items() if sha in by_sha), reverse=True)
    if counted:
        return counted[0][1]
    return "int8" if "int8" in bundle.manifest.variants else bundle.variant_names()[0]


def train_head(head: Head, x: np.ndarray, y: np.ndarray, classes: int, epochs: int, seed: int) -> Head:
    """The head's layers trained further on (features, class) with ``classes`` outputs: the old classes'
    columns start from the serving head, a new one's from small random weights; classes weighed evenly."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((head.features,))
    x_out, layers = inputs, []
    for i, activation in enumerate(head.activations):
        width = classes if i == len(head.activations) - 1 else head.weights[i].shape[1]
        layer = keras.layers.Dense(width, activation=activation)
        x_out = layer(x_out)
        layers.append(layer)
    model = keras.Model(inputs, x_out)
    for i, layer in enumerate(layers):
        kernel, bias = layer.get_weights()
        old = head.weights[i].shape[1]
        kernel[:, :old], bias[:old] = head.weights[i], head.biases[i]
        if i == len(layers) - 1:
            kernel[:, old:] *= 0.1
        layer.set_weights([kernel, bias])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    weights = even_class_weights(y, classes)
    model.fit(x, y, epochs=epochs, batch_size=64, class_weight=weights, verbose=0, shuffle=True)
    trained = [layer.get_weights() for layer in layers]
    return Head([w for w, _ in trained], [b for _, b in trained], list(head.activations))


def teach(samples: Path, serving: Path, data: Path, out: Path, cache: Path, epochs: int = 30, seed: int = 0) -> Taught:
    """A new bundle in ``out``: the serving one's backbone, a head trained on the training set's features and the
    answered samples' (new labels become new classes, each with its bin from the review folder's bins.yaml)."""
    started = time.perf_counter()
    bundle = Bundle.open(serving)
    head = bundle.head()
    if head is None:
        raise SmartbinError(f"{serving}: not a bundle in two parts (smartbin convert --split-head): no head to teach")
    by_backbone = answered_features(samples)
    variant = serving_variant(bundle, by_backbone)
    answered = by_backbone.get(bundle.manifest.variants[variant].sha256, [])
    labels = [LabelEntry(index=e.index, name=e.name, bin=e.bin) for e in bundle.manifest.labels]
    added = _new_classes(samples, labels, answered)
    index = {normalise(e.name): e.index for e in labels}
    dataset = load_dataset(data)
    kept = [(s.path, index[normalise(dataset.labels[s.label].name)]) for s in dataset.samples
            if normalise(dataset.labels[s.label].name) in index]  # fmt: skip
    old, computed = backbone_features(bundle, variant, [path for path, _ in kept], cache)
    features_s = time.perf_counter() - started
    x = np.concatenate([old, np.stack([f for _, f in answered])]) if answered else old
    y = np.array([c for _, c in kept] + [index[normalise(label)] for label, _ in answered])
    trained = train_head(head, x, y, len(labels), epochs, seed)
    train_s = time.perf_counter() - started - features_s
    write_taught(bundle, out, labels, trained, variant)
    counts = {e.name: int((y == e.index).sum()) for e in labels}
    seconds = {"features": features_s, "train": train_s, "total": time.perf_counter() - started}
    return Taught(out, [e.name for e in added], counts, seconds, computed, variant)


def _new_classes(samples: Path, labels: list[LabelEntry], answered: list[tuple[str, np.ndarray]]) -> list[LabelEntry]:
    """The answered labels the bundle does not have, appended to ``labels`` with their bins (bins.yaml)."""
    names = {normalise(e.name) for e in labels}
    bins = read_bins_file(samples / BINS_FILE)
    counts: dict[str, int] = {}
    for label, _ in answered:
        if normalise(label) not in names:
            counts[label] = counts.get(label, 0) + 1
    added = []
    for label, count in sorted(counts.items()):
        if count < MIN_EXAMPLES:
            raise SmartbinError(f"{label}: {count} answered sample(s); a new class needs {MIN_EXAMPLES} at least")
        if normalise(label) not in bins:
            raise SmartbinError(f"{label}: no bin for it yet; give it one at the review station ({BINS_FILE})")
        added.append(LabelEntry(index=len(labels), name=label, bin=bins[normalise(label)]))
        labels.append(added[-1])
    return added


def write_taught(bundle: Bundle, out: Path, labels: list[LabelEntry], head: Head, variant: str) -> None:
    """The new bundle: every backbone file linked from ``bundle``, the new head, the acceptance images with the
    probabilities the backbone (its float variant where it has one) and the new head give them."""
    if out.exists():
        raise SmartbinError(f"{out}: exists already")
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in bundle.manifest.variants.values():
        link_or_copy(bundle.path / entry.file, staging / entry.file)
    images, _ = bundle.acceptance()
    reference = next((v for v in ("float32", "onnx") if v in bundle.manifest.variants), variant)
    backbone = open_engine(bundle, "auto", reference).backbone
    probs = head.apply(np.concatenate([backbone.infer(image[None]) for image in images]))
    np.savez_compressed(staging / "acceptance.npz", images=images, probs=probs)
    manifest = bundle.manifest.model_copy(deep=True)
    manifest.labels, manifest.probes = labels, {}
    manifest.name = f"{manifest.name}+" + "+".join(e.name for e in labels[len(bundle.manifest.labels) :])
    manifest.created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest.head = write_head(head, staging)
    path = staging / "acceptance.npz"
    manifest.acceptance = AcceptanceFile(
        file=path.name, sha256=sha256_file(path), size=path.stat().st_size, images=len(images)
    )
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2), encoding="utf-8")
    Bundle.open(staging).verify()
    staging.rename(out)
