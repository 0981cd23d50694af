"""The gate a converted variant passes: does the bin act as it would with the Keras model?

Two measures, each on the images it needs. Top-1 on the labelled held-out split: a quantized variant
may lose at most a point. Agreement with Keras' top-1 needs no labels, so it is measured on many more
images (the held-out split, training images not used for calibration, and flipped or brightened copies
when those are few), and, for the quantized variants, only where the bin would act: where either model's
confidence reaches ``decision.min_confidence``. Below it the vote sends the item to the default bin
whatever the label, so a weak model's near-ties flipping there change nothing a user sees. The overall
agreement and the counts are reported beside it.
"""

from __future__ import annotations

import numpy as np

from edge.bundle import GateResult

# (minimum agreement, most top-1 lost; None: agreement on every image, not only the confident ones)
GATES: dict[str, tuple[float, float | None]] = {
    "float32": (0.999, None),
    "float16": (0.999, None),
    "dynamic": (0.99, 0.01),
    "int8": (0.99, 0.01),
    "onnx": (0.999, None),
    "onnx_int8": (0.99, 0.01),
}


def gate(
    variant: str, probs: np.ndarray, keras_probs: np.ndarray, truth: np.ndarray, min_confidence: float
) -> GateResult:
    """Compare a variant's probabilities with Keras' on the same images; the first ``len(truth)`` are
    the labelled held-out ones."""
    min_agreement, max_drop = GATES[variant]
    labelled = slice(0, len(truth))
    top1 = float((probs[labelled].argmax(1) == truth).mean())
    keras_top1 = float((keras_probs[labelled].argmax(1) == truth).mean())
    same = probs.argmax(1) == keras_probs.argmax(1)
    confident = np.maximum(probs.max(1), keras_probs.max(1)) >= min_confidence
    if max_drop is None:  # float variants: every image counts
        confident = np.ones_like(confident)
    acting = float(same[confident].mean()) if confident.any() else 1.0
    passed = acting >= min_agreement and (max_drop is None or keras_top1 - top1 <= max_drop + 1e-9)
    return GateResult(
        images=len(truth),
        top1=top1,
        keras_top1=keras_top1,
        agreement=acting,
        overall_agreement=float(same.mean()),
        agreement_images=len(same),
        confident_images=int(confident.sum()),
        min_confidence=None if max_drop is None else min_confidence,
        max_prob_diff=float(np.abs(probs - keras_probs).max()),
        min_agreement=min_agreement,
        max_top1_drop=max_drop,
        passed=passed,
    )


def describe_failure(result: GateResult) -> str:
    """Why a gate failed, in figures."""
    reasons = []
    if result.agreement < result.min_agreement:
        where = (
            f" on the {result.confident_images} images either model is ≥ {result.min_confidence:.0%} sure of"
            if result.min_confidence is not None
            else ""
        )
        reasons.append(f"agreement {result.agreement:.2%} < {result.min_agreement:.1%}{where}")
    if result.max_top1_drop is not None and result.keras_top1 - result.top1 > result.max_top1_drop + 1e-9:
        reasons.append(
            f"top-1 drop {(result.keras_top1 - result.top1) * 100:.2f} points > {result.max_top1_drop * 100:.0f}"
        )
    return "; ".join(reasons)


def gate_images(held_out: np.ndarray, spare: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The agreement set: the held-out images, then spare (uncalibrated) training images, then flipped
    and brightened copies of both, up to ``count`` images (never fewer than the held-out ones)."""
    images = np.concatenate([held_out, spare[: max(0, count - len(held_out))]])
    rng = np.random.default_rng(seed)
    pool = images
    while len(images) < count and len(pool):
        copies = pool[:, :, ::-1] if rng.random() < 0.5 else pool
        shift = rng.integers(-30, 31, (len(copies), 1, 1, 1))
        copies = np.clip(copies.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        images = np.concatenate([images, copies[: count - len(images)]])
    return images
