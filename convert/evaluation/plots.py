"""The report's PNGs (matplotlib, no display): curves per phase, confusion matrices, the worst images."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@cache
def _cjk_font() -> str | None:
    """A font with Chinese glyphs when one is installed (the seed's class names), else None."""
    from matplotlib import font_manager

    for font in font_manager.fontManager.ttflist:
        if any(key in font.name for key in ("CJK", "WenQuanYi", "Droid Sans Fallback", "AR PL")):
            return font.name
    return None


def display_names(names: list[str]) -> list[str]:
    """Names as the PNGs can draw them: non-Latin names become '#index' without a font for them
    (report.html lists every name)."""
    if _cjk_font() or all(name.isascii() for name in names):
        return names
    return [name if name.isascii() else f"#{i}" for i, name in enumerate(names)]


def _font():
    font = _cjk_font()
    return {"family": font} if font else {}


def plot_confusion(path: Path, matrix: np.ndarray, names: list[str], what: str) -> None:
    """Rows normalised to the true class's images (colour), with the counts written in when they fit."""
    plt = _pyplot()
    side = max(4.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    shown = display_names(names)
    ax.set_xticks(range(len(names)), shown, rotation=90, **_font())
    ax.set_yticks(range(len(names)), shown, **_font())
    if len(names) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"true {what}")
    ax.set_title(f"Confusion per {what}")
    fig.colorbar(im, ax=ax, fraction=0.046, label=f"share of the true {what}'s images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, history_csv: Path, phases: list[tuple[str, int]]) -> None:
    """Loss and accuracy per epoch, training and validation, each phase's start marked."""
    with history_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], style, marker="o", label=key.replace("_", " "))
        for name, first in phases:
            ax.axvline(first + 0.5, color="grey", linewidth=0.8)
            ax.text(first + 0.6, ax.get_ylim()[1], name, va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_worst(path: Path, worst: list[dict], names: list[str], columns: int = 6) -> None:
    """A contact sheet: each image with its true and predicted class (red: wrong) and the confidence."""
    from edge.errors import ImageError
    from edge.formats.images import read_image

    plt = _pyplot()
    rows = max(1, -(-len(worst) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    shown = dict(zip(names, display_names(names)))
    for ax, item in zip(axes.flat, worst):
        try:
            ax.imshow(read_image(item["path"]))
        except ImageError:
            ax.text(0.5, 0.5, "unreadable", ha="center")
        wrong = item["true"] != item["predicted"]
        ax.set_title(
            f"true {shown[item['true']]}\npred {shown[item['predicted']]} {item['confidence']:.2f}",
            fontsize=8,
            color="red" if wrong else "black",
            **_font(),
        )
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
