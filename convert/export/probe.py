"""Peak probes: models of nothing but large 1x1 convolutions (matrix products), shipped in the bundle.

The bench runs them with the same library, backend and threads as a variant: what they reach is
the library's own best rate for that data type on this machine, measured, not assumed. ResNet's
convolutions are the same kind of arithmetic, so a model row cannot honestly beat it by much.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from convert.export.recipes import OnnxRecipe
from convert.export.writers import (
    convert_onnx,
    export_saved_model,
    quantize_onnx,
    quiet_stdout,
    saved_model_converter,
)
from edge.formats.bundle import ProbeFile, sha256_file

log = logging.getLogger(__name__)

SIDE = 28  # 784 rows per product
CHANNELS = 512
LAYERS = 4
GFLOP = LAYERS * SIDE * SIDE * CHANNELS * CHANNELS * 2 / 1e9  # 1.64


def probe_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIDE, SIDE, CHANNELS), name="x")
    x = inputs
    for i in range(LAYERS):
        # ReLU keeps the activations in a range int8 calibrates well; a 1x1 convolution is one matrix product
        x = keras.layers.Conv2D(CHANNELS, 1, activation="relu", name=f"gemm{i}")(x)
    return keras.Model(inputs, x, name="peak_probe")


def calibration(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((n, SIDE, SIDE, CHANNELS), dtype=np.float32)


def write_probes(out: Path, onnx: bool, recipe: OnnxRecipe) -> dict[str, ProbeFile]:
    """Write float32 and int8 probes for TFLite (and ONNX Runtime when ``onnx``, quantized as the model
    by ``recipe``) into ``out``."""
    model = probe_model()
    images = calibration()
    saved = export_saved_model(model, out / "probe_saved_model")
    probes: dict[str, ProbeFile] = {}
    for dtype in ("float32", "int8"):
        converter = saved_model_converter(saved)
        if dtype == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = out / f"probe_{dtype}.tflite"
        with quiet_stdout():
            path.write_bytes(converter.convert())
        probes[f"tflite_{dtype}"] = _entry(path, "tflite", dtype)
    if onnx:
        float_path = out / "probe_float32.onnx"
        convert_onnx(out / "probe_float32.tflite", float_path)
        probes["onnx_float32"] = _entry(float_path, "onnx", "float32")
        int8_path = out / "probe_int8.onnx"
        quantize_onnx(float_path, int8_path, images, recipe=recipe)
        probes["onnx_int8"] = _entry(int8_path, "onnx", "int8")
    shutil.rmtree(saved, ignore_errors=True)
    log.info("peak probes: %s (%.2f GFLOP each)", ", ".join(probes), GFLOP)
    return probes


def _entry(path: Path, fmt: str, dtype: str) -> ProbeFile:
    return ProbeFile(
        file=path.name, format=fmt, dtype=dtype, gflop=GFLOP, sha256=sha256_file(path), size=path.stat().st_size
    )
