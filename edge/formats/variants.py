"""The model variants a bundle may hold, and everything each one is: one table that the bundle, the
runtime's `auto`, the config, the converter, its gate, its second process and the bench all read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Variant:
    """One variant: its file and format, the arithmetic its kernels do, how it is quantized, the gate it
    must pass against Keras, and its place in `auto`'s preference and in the converter's second process."""

    name: str
    file: str
    format: Literal["tflite", "onnx"]
    dtype: Literal["float32", "float16", "int8"]  # what the kernels may compute in (the bench's peak)
    calibration: str | None  # how its ranges are found: "MinMax", "none" (dynamic range); None: not quantized
    min_agreement: float  # with Keras: on every image (float), or on the images the bin acts on (quantized)
    max_drop: float | None  # most of the items sorted right it may lose (None: float, agreement on all)
    float_reference: str  # the float variant in the same format, which the bench compares it with
    auto_rank: int  # `auto`'s preference where the engine runs it (0 first)
    second_process: int | None  # order of conversion in the converter's second process (None: the first)

    @property
    def quantized(self) -> bool:
        return self.calibration is not None


VARIANTS: tuple[Variant, ...] = (  # in the order the converter writes them (and the CLI's default lists them)
    Variant("float32", "float32.tflite", "tflite", "float32", None, 0.999, None, "float32", 1, None),
    Variant("float16", "float16.tflite", "tflite", "float16", None, 0.999, None, "float32", 2, 2),
    Variant("dynamic", "dynamic.tflite", "tflite", "int8", "none", 0.99, 0.01, "float32", 3, 1),
    Variant("int8", "int8.tflite", "tflite", "int8", "MinMax", 0.99, 0.01, "float32", 0, 0),
    Variant("onnx", "model.onnx", "onnx", "float32", None, 0.999, None, "onnx", 4, None),
    Variant("onnx_int8", "model_int8.onnx", "onnx", "int8", "MinMax", 0.99, 0.01, "onnx", 5, None),
)
BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}
TFLITE_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS if v.format == "tflite")
ONNX_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS if v.format == "onnx")
# file per variant, in the order `auto` prefers them (the config and its JSON schema list them so too)
VARIANT_FILES: dict[str, str] = {v.name: v.file for v in sorted(VARIANTS, key=lambda v: v.auto_rank)}
SECOND_PROCESS: tuple[str, ...] = tuple(
    v.name for v in sorted(VARIANTS, key=lambda v: v.second_process or 0) if v.second_process is not None
)


def is_onnx(variant: str) -> bool:
    """ONNX variants run in ONNX Runtime, the others in a TFLite interpreter."""
    return variant in BY_NAME and BY_NAME[variant].format == "onnx"
