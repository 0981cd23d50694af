"""How long training will take, said before it starts: the model's measured speed on a few batches of
the user's images, times the images and epochs of each phase."""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from convert.training.inputs import make_dataset
from edge.formats.dataset import LabelledImage

log = logging.getLogger(__name__)

# An image's cost in each phase against the measured forward pass (eager calls; fit runs a compiled graph,
# faster). Measured on ResNet50 at 224 px, 2 AMD cores, AVX2 (forward 7.5 images/s): the frozen head phase
# trained 15.1 images/s, fine-tuning the last stage 7.4, the feature cache computed 6.8; the whole model
# (backward through everything: about three forward passes) is scaled from these.
STEP_COST = {"head": 0.6, "fine-tune": 1.2, "whole model": 1.8, "features": 1.0, "validation": 0.5}
WARM_UP_BATCHES = 3  # the first traces the model and is not timed


def forward_speed(model: keras.Model, samples: list[LabelledImage], img_size: int, batch_size: int) -> float:
    """Images per second of the model's forward pass on a few batches of ``samples`` (decoding not timed)."""
    batches = [x for x, _ in make_dataset(samples[: batch_size * WARM_UP_BATCHES], img_size, batch_size, False)]
    model(batches[0], training=False)
    timed = batches[1:] or batches
    start = time.perf_counter()
    for x in timed:
        model(x, training=False)
    return sum(len(x) for x in timed) / max(time.perf_counter() - start, 1e-9)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _epoch(train: int, val: int, phase: str) -> float:
    """One epoch's cost in forward passes: its training steps and its validation."""
    return train * STEP_COST[phase] + val * STEP_COST["validation"]


def estimate(
    speed: float, train: int, val: int, epochs: int, fine_tune: int, frozen: bool, cache_passes: int | None
) -> list[dict]:
    """Each phase's estimated seconds, named as throughput.json names the phases that ran.
    ``cache_passes``: the feature cache's augmentation passes (None: no cache)."""
    phases = []
    if not frozen:
        phases.append(("whole model", epochs * _epoch(train, val, "whole model") / speed))
    elif cache_passes is None:
        phases.append(("head", epochs * _epoch(train, val, "head") / speed))
    else:  # at most: what the cache holds already is reused; the head then trains in seconds
        phases.append(("features", (train * cache_passes + val) * STEP_COST["features"] / speed))
        phases.append(("head on cached features", 0.0))
    if fine_tune and frozen:
        phases.append(("fine-tune", fine_tune * _epoch(train, val, "fine-tune") / speed))
    return [{"phase": name, "seconds": round(seconds, 1)} for name, seconds in phases]


def say(phases: list[dict], speed: float, train: int, epochs: int, frozen: bool, cache_passes: int | None) -> None:
    """Log the estimate, and what the feature cache would save where it would."""
    total = sum(p["seconds"] for p in phases)
    log.info(
        "estimated time: %s (%s; the model runs %.1f images/s forward here, %d training images)",
        _minutes(total),
        ", ".join(f"{p['phase']} ~{_minutes(p['seconds'])}" for p in phases),
        speed,
        train,
    )
    once = train * STEP_COST["features"] / speed
    if frozen and (cache_passes is None or cache_passes > 1) and epochs > 1:
        log.info(
            "with --feature-cache DIR --feature-passes 1 the backbone would run once (~%s) instead of %d times",
            _minutes(once),
            cache_passes or epochs,
        )


def plan_and_say(
    model: keras.Model,
    samples: tuple[list[LabelledImage], list[LabelledImage]],
    config,
    frozen: bool,
    passes: int | None,
) -> tuple[list[dict], float]:
    """Measure, estimate and log; returns (the phases' estimates, forward images/s). ``passes``: the
    feature cache's augmentation passes when the head trains on it, else None."""
    train, val = samples
    speed = forward_speed(model, train, config.img_size, config.batch_size)
    phases = estimate(speed, len(train), len(val), config.epochs, config.fine_tune_epochs, frozen, passes)
    say(phases, speed, len(train), config.epochs, frozen, passes)
    return phases, float(np.round(speed, 1))
