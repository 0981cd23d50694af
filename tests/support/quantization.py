"""What the quantization tests share: integer-only checks and the ONNX recipes' gates on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.export.gate import describe_failure
from edge.formats.bundle import Bundle


def assert_integer_variants(bundle: Bundle, most_in_float: dict[str, int]) -> None:
    """Every quantized variant passed its gate on many images with at most the given operations in float, a
    count that is part of the model's own."""
    for variant, most in most_in_float.items():
        entry = bundle.manifest.variants[variant]
        g, report = entry.gate, entry.quantization
        floats = len(report.float_layers) if report else 0
        print(
            f"{bundle.manifest.name} {variant}: agreement {g.agreement:.1%} on {g.confident_images} of "
            f"{g.agreement_images} (all: {g.overall_agreement:.1%}), held-out top-1 {g.top1:.1%} vs "
            f"{g.keras_top1:.1%}, {floats} op(s) in float" + (f", {entry.recipe}" if entry.recipe else "")
        )
        assert g.passed and g.agreement >= 0.99 and g.top1_drop <= 0.01 + 1e-9, variant
        assert g.agreement_images >= 500 and g.confident_images >= 100, variant  # measured on many images
        assert floats <= most, (variant, report.float_layers)
        if report and report.quantized_ops is not None:
            assert floats <= report.quantized_ops and sum(report.float_op_types.values()) == floats, variant


def class_folder_images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB images, label indices) of a class-folder tree, classes in sorted order."""
    import cv2

    images, labels = [], []
    for index, klass in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for path in sorted(klass.glob("*.png")):
            images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
            labels.append(index)
    return np.stack(images), np.array(labels)


def onnx_recipe_gates(bundle_dir: Path, images: np.ndarray, labels: np.ndarray, out: Path) -> dict:
    """model.onnx quantized with every target's recipe (100 calibration images, 10 per class at most), each
    gated on up to 500 other images against the float ONNX model: {target: (file, GateResult)}."""
    from convert.export.gate import gate
    from convert.export.recipes import ONNX_RECIPES
    from convert.export.writers import quantize_onnx
    from edge.runtime.onnx import OnnxEngine

    order = np.random.default_rng(0).permutation(len(images))
    calibration = np.concatenate([order[labels[order] == k][:10] for k in np.unique(labels)])
    rest = np.setdiff1d(order, calibration)[:500]

    def probs(path: Path) -> np.ndarray:
        engine = OnnxEngine(path, threads=2)
        return np.concatenate([engine.infer(x[None]) for x in images[rest]])

    reference = probs(bundle_dir / "model.onnx")
    gates = {}
    for target, recipe in ONNX_RECIPES.items():
        path = out / f"{target}.onnx"
        cache = out / "ranges"  # the float model's activation ranges, the same for every recipe: measured once
        cache.mkdir(exist_ok=True)
        quantize_onnx(bundle_dir / "model.onnx", path, images[calibration], recipe=recipe, cache=cache)
        gates[target] = path, gate("onnx_int8", probs(path), reference, labels[rest], len(rest), 0.6)
    return gates


def assert_every_recipe_passes(gates: dict) -> None:
    """x86 with VNNI (8-bit weights) and arm64 (S8S8) pass the gate fully integer; x86 without VNNI passes with
    7-bit weights, or the converter falls back to 8-bit ones: the VNNI recipe's very file, which smartbin's
    engine runs exactly on such a CPU."""
    for target, (_, result) in gates.items():
        print(f"{target}: agreement {result.agreement:.1%} of {result.confident_images}, drop {result.top1_drop:+.2%}")
    for target in ("x86-vnni", "arm64"):
        assert gates[target][1].passed, (target, describe_failure(gates[target][1]))
    assert gates["x86"][1].passed or gates["x86-vnni"][1].passed
