"""Accuracy of every variant of a bundle on a labelled dataset, through the device's own engines.

No TensorFlow: `smartbin evaluate` and `edge/bench.py --data` both use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.dataset import Dataset, load_dataset
from edge.formats.labels import BINS, Label
from edge.runtime import open_engine, runs
from edge.vision.preprocess import load_images


def accuracy_figures(probs: np.ndarray, truth: np.ndarray, labels: list[Label]) -> dict:
    """Top-1, top-5, per-class and per-bin accuracy of predicted probabilities."""
    pred = probs.argmax(axis=1)
    k = min(5, probs.shape[1])
    top5 = np.argsort(-probs, axis=1)[:, :k]
    bins = np.array([lab.bin for lab in labels])
    per_class = {
        lab.name: float((pred[truth == lab.index] == lab.index).mean()) if (truth == lab.index).any() else None
        for lab in labels
    }
    per_bin = {b: float((bins[pred[bins[truth] == b]] == b).mean()) if (bins[truth] == b).any() else None for b in BINS}
    return {
        "images": int(len(truth)),
        "top1": float((pred == truth).mean()),
        "top5": float((top5 == truth[:, None]).any(axis=1).mean()),
        "bin_accuracy": float((bins[pred] == bins[truth]).mean()),
        "per_class": per_class,
        "per_bin": per_bin,
    }


def bundle_truth(dataset: Dataset, labels: list[Label], data: str | Path) -> np.ndarray:
    """Each sample's class as the bundle's label index, matched by class name (a hold-out may lack a class)."""
    index = {lab.name: lab.index for lab in labels}
    if missing := [lab.name for lab in dataset.labels if lab.name not in index]:
        raise SmartbinError(
            f"{data}: the bundle has no class {missing[0]!r} ({len(missing)} unknown; it knows: "
            f"{', '.join(sorted(index)[:12])}{' ...' if len(index) > 12 else ''})"
        )
    return np.array([index[dataset.labels[s.label].name] for s in dataset.samples], dtype=np.int64)


def evaluate_bundle(
    bundle_path: str | Path,
    data: str | Path,
    backend: str = "auto",
    threads: int | None = None,
    probs_out: dict[str, np.ndarray] | None = None,
    variants: list[str] | None = None,
) -> dict:
    """Top-1, bin accuracy and agreement with float32 (or the first variant) for each variant (or only
    ``variants``); ``probs_out`` receives each variant's probabilities."""
    bundle = Bundle.open(bundle_path)
    bundle.verify()
    dataset = load_dataset(data)
    truth = bundle_truth(dataset, bundle.labels, data)
    spec = bundle.manifest.input
    images = load_images(dataset.samples, spec.height, spec.width)
    results: dict[str, dict] = {}
    probs_by_variant: dict[str, np.ndarray] = {}
    for variant in [v for v in bundle.variant_names() if variants is None or v in variants]:
        # A TFLite backend cannot run the ONNX file (nor the reverse): those variants use their own.
        chosen = backend if backend == "auto" or runs(backend, variant) else "auto"
        engine = open_engine(bundle, chosen, variant, threads)
        probs = np.concatenate([engine.infer(x[None]) for x in images])
        probs_by_variant[variant] = probs
        figures = accuracy_figures(probs, truth, bundle.labels)
        results[variant] = {
            "backend": engine.backend,
            "top1": figures["top1"],
            "top5": figures["top5"],
            "bin_accuracy": figures["bin_accuracy"],
            "per_bin": figures["per_bin"],
        }
    if probs_out is not None:
        probs_out.update(probs_by_variant)
    reference = "float32" if "float32" in probs_by_variant else next(iter(probs_by_variant))
    ref = probs_by_variant[reference]
    for variant, probs in probs_by_variant.items():
        results[variant]["agreement"] = float((probs.argmax(1) == ref.argmax(1)).mean())
        results[variant]["max_prob_diff"] = float(np.abs(probs - ref).max())
    return {
        "bundle": str(bundle_path),
        "data": str(data),
        "images": len(truth),
        "reference": reference,
        "variants": results,
    }
