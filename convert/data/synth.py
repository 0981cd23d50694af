"""`smartbin dataset synth`: a learnable synthetic dataset in the seed format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edge.formats.dataset import RULES_FILE
from edge.formats.images import write_jpeg
from edge.sources.scene import render_sample
from edge.system.paths import default_rules_path

log = logging.getLogger(__name__)


def pick_rules(num_classes: int) -> dict[str, str]:
    """Take ``num_classes`` of the 40 default classes, spread so that every bin is represented."""
    default = json.loads(default_rules_path().read_text(encoding="utf-8"))
    if not 1 <= num_classes <= len(default):
        raise ValueError(f"--classes must be between 1 and {len(default)}, got {num_classes}")
    picks = np.linspace(0, len(default) - 1, num_classes).round().astype(int)
    return {str(i): default[str(p)] for i, p in enumerate(picks)}


def write_synthetic(out: str | Path, num_classes: int = 6, per_class: int = 30, seed: int = 0, size: int = 128) -> Path:
    """Write ``num_classes * per_class`` images with label files and the rules JSON."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rules = pick_rules(num_classes)
    (out / RULES_FILE).write_text(json.dumps(rules, ensure_ascii=False, indent=2), encoding="utf-8")
    n = 0
    for _ in range(per_class):
        for cls in range(num_classes):
            name = f"img_{n}.jpg"
            write_jpeg(out / name, render_sample(cls, num_classes, size, rng))
            (out / f"img_{n}.txt").write_text(f"{name}, {cls}\n", encoding="utf-8")
            n += 1
    log.info("wrote %d images of %d classes to %s", n, num_classes, out)
    return out
