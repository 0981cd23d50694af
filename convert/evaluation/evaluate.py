"""`smartbin evaluate`: every variant of a bundle on a dataset, through the device engines (no TensorFlow),
and its report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.errors import SmartbinError

log = logging.getLogger(__name__)


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


def evaluation_report(bundle_path: str, data: str, probs: dict[str, np.ndarray], variant: str | None, out: Path) -> str:
    """`evaluate --report DIR`: the training report's page and PNGs for one variant of the bundle on ``data``
    (default: int8 where the bundle has it, what a bin runs). Returns the variant."""
    from convert.evaluation.report import write_report
    from edge.benchmark.accuracy import bundle_truth
    from edge.formats.bundle import Bundle
    from edge.formats.dataset import load_dataset

    chosen = variant or ("int8" if "int8" in probs else next(iter(probs)))
    if chosen not in probs:
        raise SmartbinError(f"--variant {chosen}: not in {bundle_path} (it has: {', '.join(probs)})")
    labels = Bundle.open(bundle_path).labels
    dataset = load_dataset(data)
    truth = bundle_truth(dataset, labels, data)
    title = f"{Path(bundle_path).resolve().name} ({chosen}) on {Path(data).resolve().name}"
    write_report(out, probs[chosen], truth, labels, [s.path for s in dataset.samples], title)
    return chosen
