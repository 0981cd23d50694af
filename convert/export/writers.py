"""The file formats a Keras model becomes: TFLite variants (from one traced SavedModel), ONNX (from the float32
TFLite), static int8 ONNX."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from convert.export.recipes import OnnxRecipe
from edge.errors import SmartbinError
from edge.formats.variants import TFLITE_VARIANTS

log = logging.getLogger(__name__)

ONNX_OPSET = 15  # what Keras' exporter wrote into model.onnx before (tf2onnx's choice then)
CALIBRATION_CACHE = ".calibration"  # in the staging folder: ONNX Runtime's ranges per calibration method


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Environment variables set for the block, then as they were."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Keras' exporter prints every traced tensor spec to stdout; keep the user's screen readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def one_load_per_saved_model() -> Iterator[None]:
    """Within the block, TFLite's converter loads each SavedModel into Python once, not twice per conversion.

    Before its C++ importer reads the SavedModel, the converter loads it in Python for its signatures and
    again for its debug info: ~4.7 s of an 11 s ResNet50 conversion, five times per bundle. The loaded
    object is only read (``saved_model_converter`` names the signature, so the converter's one change to it,
    renaming ``serve``, is not made); the files converted are the same bytes (measured)."""
    from tensorflow.lite.python import lite

    original = lite._load
    loaded: dict[tuple[str, frozenset[str]], object] = {}

    def load(path, tags=None):
        key = (str(path), frozenset(tags or ()))
        if key not in loaded:
            loaded[key] = original(path, tags)
        return loaded[key]

    lite._load = load
    try:
        yield
    finally:
        lite._load = original


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


def saved_model_converter(saved_model: Path):
    """TFLite's converter of the SavedModel's one function (``model.export()`` writes it as ``serve`` and
    ``serving_default``; naming it leaves the SavedModel's loaded object as it was)."""
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])


def tflite_converter(saved_model: Path, variant: str, calibration: np.ndarray):
    """The configured converter of one variant (also what the quantization debugger starts from)."""
    converter = saved_model_converter(saved_model)
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


def convert_onnx(tflite: Path, path: Path) -> None:
    """ONNX from the float32 TFLite file: the same frozen graph with the same folded BatchNorms (the same
    outputs, bit for bit, measured), in half the time of tracing the Keras model again. The batch is fixed
    at 1, as TensorRT prefers a static input.

    tf2onnx deep-copies the whole graph, weights included, before each of its optimizers so that a failing one
    can be skipped: ~40 copies of a ResNet50's 100 MB, 23 s of a 30 s conversion (mostly page faults).
    Converted without them first (the same operations and weights; only generated names differ), and the
    careful way only when an optimizer fails."""
    import onnx
    import tf2onnx

    try:
        with quiet_stdout(), _environment(TF2ONNX_CATCH_ERRORS="FALSE"):
            proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=ONNX_OPSET)
    except Exception:  # an optimizer failed, most likely: tf2onnx's own way skips a failing one and goes on
        log.warning("tf2onnx failed on %s without its graph copies; converting again with them", tflite, exc_info=True)
        with quiet_stdout():
            proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=ONNX_OPSET)
    for value in (*proto.graph.input, *proto.graph.output):
        batch = value.type.tensor_type.shape.dim[0]
        batch.ClearField("dim_param")
        batch.dim_value = 1
    onnx.save(proto, str(path))


def quantize_onnx(
    float_model: Path,
    path: Path,
    calibration: np.ndarray,
    method: str = "MinMax",
    exclude: Sequence[str] = (),
    *,
    recipe: OnnxRecipe,
    cache: Path | None = None,
) -> None:
    """Static int8 of the ONNX model (QDQ) as ``recipe`` says, calibrated on the int8 TFLite's images.

    ONNX Runtime runs it with u8 x s8 kernels that do twice the multiply-adds per instruction of
    float32 on x86 CPUs without VNNI, where XNNPACK's int8 is no faster than its float32.
    ``method`` is ONNX Runtime's calibration (MinMax, Entropy, Percentile); ``exclude`` names nodes
    left in float (mixed precision). ``cache``: a folder where each method's activation ranges are kept
    after its first calibration, so that every later candidate of a search is quantized without one.
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
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType[recipe.activations],
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[method],
            nodes_to_exclude=list(exclude),
            calibration_cache_path=None if cache is None else cache / f"{method}.json",
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
