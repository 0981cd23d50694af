"""`smartbin evaluate`: every variant of a bundle on a dataset, through the device engines (no TensorFlow)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

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
