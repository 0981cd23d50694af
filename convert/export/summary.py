"""The table `smartbin convert` prints: each variant's file, speed of conversion and gate figures."""

from __future__ import annotations

from rich.table import Table

from edge.formats.bundle import GateResult, VariantFile
from edge.formats.variants import BY_NAME

# The quantized variants' default calibration (what the table says when no search report exists).


def summary_table(rows: list[tuple[str, VariantFile]], title: str) -> Table:
    table = Table(title=title)
    columns = ("variant", "file", "size MB", "convert s", "top-1", "keras top-1", "agreement", "on", "all", "gate")
    for column in (*columns, "calibration", "float ops"):
        table.add_column(
            column, justify="right" if column not in ("variant", "file", "gate", "calibration") else "left"
        )
    for variant, entry in rows:
        g, q = entry.gate, entry.quantization
        status = "—" if g is None else "pass" if g.passed else ("FAIL (kept)" if g.accepted_despite_failure else "FAIL")
        table.add_row(
            variant,
            entry.file,
            f"{entry.size / 1e6:.1f}",
            f"{entry.conversion_s or 0:.1f}",
            *(("—",) * 5 if g is None else (f"{g.top1:.1%}", f"{g.keras_top1:.1%}", *_agreement(g))),
            status,
            q.calibration.split(",")[0] if q else (BY_NAME[variant].calibration or "—"),
            (f"{len(q.float_layers)}/{q.quantized_ops}" if q.quantized_ops else str(len(q.float_layers)))
            if q
            else ("0" if BY_NAME[variant].quantized else "—"),
        )
    return table


def _agreement(g: GateResult) -> tuple[str, str, str]:
    """(agreement, the images it counts, agreement on all of them) for the table."""
    total = g.agreement_images
    where = f"{g.confident_images}/{total} ≥{g.min_confidence:.0%}" if g.min_confidence is not None else f"{total}"
    return f"{g.agreement:.1%}", where, f"{g.overall_agreement:.1%}"
