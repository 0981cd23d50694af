"""The training report: top-1/top-5, per-class and per-bin accuracy, confusion matrix and curves."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from edge.dataset import Sample
from edge.labels import Label
from edge.tools.accuracy import accuracy_figures

log = logging.getLogger(__name__)


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix


def _plot_confusion(path: Path, matrix: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (validation)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_curves(path: Path, history_csv: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with history_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        ax1.plot(epochs, [float(r[key]) for r in rows], label=key)
    for key in ("accuracy", "val_accuracy"):
        ax2.plot(epochs, [float(r[key]) for r in rows], label=key)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("epoch")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, model, val: list[Sample], labels: list[Label], img_size: int, batch_size: int) -> dict:
    """Evaluate the best model on the validation split and write report.json and the PNGs."""
    from convert.pipeline import make_dataset

    probs = model.predict(make_dataset(val, img_size, batch_size, False), verbose=0)
    truth = np.array([s.label for s in val])
    report = accuracy_figures(probs, truth, labels)
    matrix = confusion_matrix(probs.argmax(axis=1), truth, len(labels))
    report["confusion_matrix"] = matrix.tolist()
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    _plot_confusion(out / "confusion_matrix.png", matrix)
    if (out / "history.csv").exists():
        _plot_curves(out / "training_curves.png", out / "history.csv")
    log.info(
        "validation top-1 %.3f, top-5 %.3f, bin accuracy %.3f", report["top1"], report["top5"], report["bin_accuracy"]
    )
    return report
