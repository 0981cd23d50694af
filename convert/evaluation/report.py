"""The report of a training run or of a bundle on a hold-out: report.json, PNGs and report.html.

One function for both (`smartbin train` on its validation split, `smartbin evaluate --report` on any
dataset), so their figures are the same computation. No TensorFlow here; matplotlib draws the PNGs.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np

from convert.evaluation.plots import plot_confusion, plot_curves, plot_worst
from edge.benchmark.accuracy import accuracy_figures
from edge.formats.labels import BINS, Label

log = logging.getLogger(__name__)

WORST = 24  # images on the contact sheet
PNGS = {
    "training_curves.png": "Loss and accuracy per epoch",
    "confusion_matrix.png": "Confusion matrix per class",
    "bin_confusion_matrix.png": "Confusion matrix per bin",
    "worst_images.png": "The worst-classified images",
}


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: the true class; columns: the predicted one."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix


def precision_recall(matrix: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per class: precision, recall, F1 and support from a confusion matrix (None where undefined)."""
    figures = {}
    for i, name in enumerate(names):
        hits, predicted, support = int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i].sum())
        precision = hits / predicted if predicted else None
        recall = hits / support if support else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if support else None)
        figures[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return figures


def worst_images(probs: np.ndarray, truth: np.ndarray, paths: list[Path], labels: list[Label]) -> list[dict]:
    """The images the model was least sure of their true class, worst first: the mistakes it was
    surest of lead."""
    order = np.argsort(probs[np.arange(len(truth)), truth], kind="stable")[:WORST]
    return [
        {
            "path": str(Path(paths[i]).resolve()),  # the page links it: a file URI needs an absolute path
            "true": labels[truth[i]].name,
            "predicted": labels[int(probs[i].argmax())].name,
            "confidence": float(probs[i].max()),
            "true_probability": float(probs[i, truth[i]]),
        }
        for i in order
    ]


def report_figures(probs: np.ndarray, truth: np.ndarray, labels: list[Label], paths: list[Path]) -> dict:
    """Everything report.json holds."""
    pred = probs.argmax(axis=1)
    figures = accuracy_figures(probs, truth, labels)
    matrix = confusion_matrix(pred, truth, len(labels))
    bin_index = np.array([BINS.index(lab.bin) for lab in labels])
    bins = confusion_matrix(bin_index[pred], bin_index[truth], len(BINS))
    return {
        **figures,
        "confusion_matrix": matrix.tolist(),
        "classes": [lab.name for lab in labels],
        "class_bins": [lab.bin for lab in labels],
        "per_class_precision_recall": precision_recall(matrix, [lab.name for lab in labels]),
        "bins": list(BINS),
        "bin_confusion_matrix": bins.tolist(),
        "per_bin_precision_recall": precision_recall(bins, list(BINS)),
        "worst": worst_images(probs, truth, paths, labels),
    }


def write_report(
    out: Path,
    probs: np.ndarray,
    truth: np.ndarray,
    labels: list[Label],
    paths: list[Path],
    title: str,
    history: Path | None = None,
    phases: list[tuple[str, int]] | None = None,
) -> dict:
    """Write report.json, the PNGs and report.html to ``out``; returns report.json's figures.
    ``history``: a Keras CSVLogger file; ``phases``: (name, first epoch) of each training phase."""
    out.mkdir(parents=True, exist_ok=True)
    report = report_figures(probs, truth, labels, paths)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    names = [lab.name for lab in labels]
    plot_confusion(out / "confusion_matrix.png", np.array(report["confusion_matrix"]), names, "class")
    plot_confusion(out / "bin_confusion_matrix.png", np.array(report["bin_confusion_matrix"]), list(BINS), "bin")
    plot_worst(out / "worst_images.png", report["worst"], names)
    if history is not None and history.is_file():
        plot_curves(out / "training_curves.png", history, phases or [])
    (out / "report.html").write_text(_html(out, report, title), encoding="utf-8")
    log.info("report: %s (top-1 %.3f, bin accuracy %.3f)", out / "report.html", report["top1"], report["bin_accuracy"])
    return report


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _table(rows: dict[str, dict], first: str, extra: dict[str, str] | None = None) -> str:
    head = f"<tr><th>{first}</th>" + ("<th>bin</th>" if extra else "")
    head += "<th>precision</th><th>recall</th><th>F1</th><th>images</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + (f"<td>{extra[name]}</td>" if extra else "")
        + "".join(f"<td>{_percent(r[k])}</td>" for k in ("precision", "recall", "f1"))
        + f"<td>{r['support']}</td></tr>"
        for name, r in rows.items()
    )
    return f"<table>{head}{body}</table>"


def _html(out: Path, report: dict, title: str) -> str:
    """One page, no server: the figures, the tables and the PNGs beside it."""
    bins = dict(zip(report["classes"], report["class_bins"]))
    images = "".join(
        f"<h2>{caption}</h2><img src='{name}' alt='{caption}'>"
        for name, caption in PNGS.items()
        if (out / name).is_file()
    )
    worst = "".join(
        f"<tr><td>{html.escape(w['true'])}</td><td>{html.escape(w['predicted'])}</td>"
        f"<td>{w['confidence']:.2f}</td><td><a href='{html.escape(Path(w['path']).as_uri())}'>"
        f"{html.escape(Path(w['path']).name)}</a></td></tr>"
        for w in report["worst"]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{report["images"]} images: top-1 <b>{_percent(report["top1"])}</b>, top-5 {_percent(report["top5"])},
right bin <b>{_percent(report["bin_accuracy"])}</b>.</p>
<h2>Per class</h2>{_table(report["per_class_precision_recall"], "class", bins)}
<h2>Per bin</h2>{_table(report["per_bin_precision_recall"], "bin")}
{images}
<h2>The worst-classified images</h2><table><tr><th>true</th><th>predicted</th><th>confidence</th><th>file</th></tr>
{worst}</table></body></html>
"""
