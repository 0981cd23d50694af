"""`smartbin evaluate`: every variant of a bundle on a dataset, through the device engines (no TensorFlow)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from convert.dataset import load_dataset, load_images
from convert.report import accuracy_figures
from edge.bundle import Bundle, is_onnx
from edge.errors import SmartbinError
from edge.runtime import open_engine

log = logging.getLogger(__name__)


def evaluate_bundle(
    bundle_path: str | Path, data: str | Path, backend: str = "auto", threads: int | None = None
) -> dict:
    """Top-1, bin accuracy and agreement with float32 (or the first variant) for each variant."""
    bundle = Bundle.open(bundle_path)
    bundle.verify()
    dataset = load_dataset(data)
    if dataset.num_classes != len(bundle.labels):
        raise SmartbinError(f"{data}: {dataset.num_classes} classes, but the bundle has {len(bundle.labels)} labels")
    spec = bundle.manifest.input
    images = load_images(dataset.samples, spec.height, spec.width)
    truth = np.array([s.label for s in dataset.samples])
    results: dict[str, dict] = {}
    probs_by_variant: dict[str, np.ndarray] = {}
    for variant in bundle.variant_names():
        # A TFLite backend cannot run the ONNX file (nor the reverse): those variants use their own.
        chosen = backend if is_onnx(variant) == (backend == "onnxruntime") else "auto"
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


def print_evaluation(result: dict) -> None:
    table = Table(title=f"{result['bundle']} on {result['data']} ({result['images']} images)")
    for column in ("variant", "backend", "top-1", "top-5", "bin acc.", f"agree w/ {result['reference']}", "max Δp"):
        table.add_column(column)
    for variant, r in result["variants"].items():
        table.add_row(
            variant,
            r["backend"],
            f"{r['top1']:.1%}",
            f"{r['top5']:.1%}",
            f"{r['bin_accuracy']:.1%}",
            f"{r['agreement']:.1%}",
            f"{r['max_prob_diff']:.4f}",
        )
    Console().print(table)
