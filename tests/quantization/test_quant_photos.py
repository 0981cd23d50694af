"""The second real image set for quantization: patches of scikit-image's photographs (materials, scenes, a
microscope slide, the sky; 10 classes), the small residual network trained from scratch (every BatchNorm
trained, then re-estimated), every variant converted and gated."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.formats.bundle import Bundle
from tests.support.quantization import (
    assert_every_recipe_passes,
    assert_integer_variants,
    class_folder_images,
    onnx_recipe_gates,
)
from tests.support.realimages import write_photo_patches

pytestmark = pytest.mark.slow


def test_a_network_trained_from_scratch_on_real_photographs_quantizes_to_full_integer(tmp_path: Path):
    from edge.cli import main

    data = write_photo_patches(tmp_path / "photos")
    run = tmp_path / "run"
    train = ["train", "--data", str(data), "--out", str(run), "--backbone", "resnet-mini", "--weights", "none"]
    assert main([*train, "--img-size", "48", "--epochs", "5"]) == 0
    out = tmp_path / "photos-bundle"
    assert main(["convert", str(run), "--out", str(out), "--onnx", "--no-probes"]) == 0
    bundle = Bundle.open(out)
    assert bundle.manifest.keras_accuracy["top1"] > 0.5  # it learned (chance is 0.1)
    assert all(entry.gate.passed for entry in bundle.manifest.variants.values())
    assert_integer_variants(bundle, {"dynamic": 2, "int8": 3, "onnx_int8": 3})
    # every CPU target's ONNX recipe on the same photographs, whichever CPU runs this
    images, labels = class_folder_images(data)
    assert_every_recipe_passes(onnx_recipe_gates(out, images, labels, tmp_path))
