"""The gate a converted variant passes: does the bin act as it would with the Keras model?

Measured on many images: the held-out split, training images not used for calibration, and flipped or
brightened copies when those are few (every one labelled). A quantized variant must agree with Keras'
top-1 on 99 % of the images where the bin would act: where either model's confidence reaches
``decision.min_confidence``; and it may lose at most a point of the items the bin sorts right by itself
(confidence reaching ``min_confidence`` and the right label), over all of them: on a small held-out split
one image is several points. Below ``min_confidence`` the vote sends the item to the default bin whatever
the label, so a weak model's near-ties flipping there change nothing a user sees (they lower its plain
top-1). The held-out top-1, the overall agreement and the counts are reported beside it.
"""

from __future__ import annotations

import numpy as np

from edge.formats.bundle import GateResult
from edge.formats.variants import BY_NAME


def gate(
    variant: str, probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray, held_out: int, min_confidence: float
) -> GateResult:
    """Compare a variant's probabilities with Keras' on the same labelled images; the first ``held_out``
    are the held-out split."""
    min_agreement, max_drop = BY_NAME[variant].min_agreement, BY_NAME[variant].max_drop
    right, keras_right = probs.argmax(1) == labels, keras_probs.argmax(1) == labels
    same = probs.argmax(1) == keras_probs.argmax(1)
    confident = np.maximum(probs.max(1), keras_probs.max(1)) >= min_confidence
    if max_drop is None:  # float variants: every image counts
        confident = np.ones_like(confident)
    acting = float(same[confident].mean()) if confident.any() else 1.0
    sorted_right, keras_sorted_right = right, keras_right
    if max_drop is not None:  # the items the bin itself sorts right: sure enough, and the right label
        sorted_right = right & (probs.max(1) >= min_confidence)
        keras_sorted_right = keras_right & (keras_probs.max(1) >= min_confidence)
    drop = float(keras_sorted_right.mean() - sorted_right.mean())
    passed = acting >= min_agreement and (max_drop is None or drop <= max_drop + 1e-9)
    return GateResult(
        images=held_out,
        top1=float(right[:held_out].mean()),
        keras_top1=float(keras_right[:held_out].mean()),
        top1_drop=drop,
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
    if result.max_top1_drop is not None and result.top1_drop > result.max_top1_drop + 1e-9:
        reasons.append(
            f"{result.top1_drop * 100:.2f} points fewer items sorted right by the bin (≥ {result.min_confidence:.0%} "
            f"and the right label) on {result.agreement_images} images > {result.max_top1_drop * 100:.0f}"
        )
    return "; ".join(reasons)


def gate_images(
    held_out: tuple[np.ndarray, np.ndarray], spare: tuple[np.ndarray, np.ndarray], count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The gate's (images, labels): the held-out ones, then spare (uncalibrated) training images, then
    flipped and brightened copies of both, up to ``count`` images (never fewer than the held-out ones)."""
    room = max(0, count - len(held_out[0]))
    images, labels = np.concatenate([held_out[0], spare[0][:room]]), np.concatenate([held_out[1], spare[1][:room]])
    rng = np.random.default_rng(seed)
    pool, pool_labels = images, labels
    while len(images) < count and len(pool):
        copies = pool[:, :, ::-1] if rng.random() < 0.5 else pool
        shift = rng.integers(-30, 31, (len(copies), 1, 1, 1))
        copies = np.clip(copies.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        take = count - len(images)
        images, labels = np.concatenate([images, copies[:take]]), np.concatenate([labels, pool_labels[:take]])
    return images, labels
