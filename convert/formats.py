"""The file formats a Keras model becomes: TFLite variants (from one traced SavedModel), ONNX, static int8 ONNX."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from edge.errors import SmartbinError

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Keras' exporter prints every traced tensor spec to stdout; keep the user's screen readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def export_saved_model(model, path: Path) -> Path:
    """Trace the model once; every TFLite variant converts from this SavedModel (saves ~10 s each)."""
    with quiet_stdout():
        model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def convert_tflite(saved_model: Path, variant: str, calibration: np.ndarray) -> bytes:
    """One TFLite variant. int8 is full-integer with uint8 input and output."""
    converter = tflite_converter(saved_model, variant, calibration)
    with quiet_stdout():
        return converter.convert()


def tflite_converter(saved_model: Path, variant: str, calibration: np.ndarray):
    """The configured converter of one variant (also what the quantization debugger starts from)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif variant != "float32":
        raise SmartbinError(f"unknown variant {variant!r} (allowed: {', '.join(TFLITE_VARIANTS)})")
    return converter


def convert_onnx(model, path: Path, height: int, width: int) -> None:
    """ONNX with a static (1, H, W, 3) uint8 input, as TensorRT prefers."""
    import keras

    spec = [keras.InputSpec(shape=(1, height, width, 3), dtype="uint8")]
    with quiet_stdout():
        model.export(str(path), format="onnx", input_signature=spec, verbose=False)


def quantize_onnx(
    float_model: Path, path: Path, calibration: np.ndarray, method: str = "MinMax", exclude: Sequence[str] = ()
) -> None:
    """Static int8 of the ONNX model (QDQ, per-channel weights), calibrated on the int8 TFLite's images.

    ONNX Runtime runs it with u8 x s8 kernels that do twice the multiply-adds per instruction of
    float32 on x86 CPUs without VNNI, where XNNPACK's int8 is no faster than its float32. Weights
    keep 7 bits (reduce_range) so that those kernels' 16-bit intermediate sums cannot saturate.
    ``method`` is ONNX Runtime's calibration (MinMax, Entropy, Percentile); ``exclude`` names nodes
    left in float (mixed precision).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx_input_name(float_model)

    prepared = path.with_suffix(".prepared.onnx")
    prepare_onnx(float_model, prepared)
    try:
        quantize_static(
            str(prepared),
            str(path),
            image_reader(name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[method],
            nodes_to_exclude=list(exclude),
        )
    finally:
        prepared.unlink(missing_ok=True)


def onnx_input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def image_reader(input_name: str, images: np.ndarray):
    """ONNX Runtime's calibration reader over images, one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(images)

        def get_next(self) -> dict | None:
            image = next(self.images, None)
            return None if image is None else {input_name: image[None]}

    return Images()


def prepare_onnx(float_model: Path, out: Path) -> Path:
    """ONNX Runtime's pre-processing for quantization (fuses MatMul+Add into Gemm and so on): the node
    names a quantized model and ``nodes_to_exclude`` use are this graph's, not the exported one's."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(float_model), str(out), skip_symbolic_shape=True)
    return out
