"""How an ONNX model is quantized for the CPU it will run on (U8S8 or S8S8, 7- or 8-bit weights), and which
CPU that is. No TensorFlow: the CLI lists the targets."""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

from edge.errors import SmartbinError
from edge.system.cpu import x86_int8_dot_product


@dataclass(frozen=True)
class OnnxRecipe:
    """How model_int8.onnx is quantized for the CPU it will run on, and why (written to the manifest)."""

    target: str
    activations: str  # QUInt8 or QInt8
    reduce_range: bool  # 7-bit weights
    why: str
    per_channel: bool = True  # one weight scale per output channel: a folded BatchNorm's scales vary widely

    def describe(self) -> str:
        kind = "U8S8" if self.activations == "QUInt8" else "S8S8"
        bits = "7-bit" if self.reduce_range else "8-bit"
        return f"QDQ {kind}, per-channel {bits} weights, for {self.target}: {self.why}"

    def full_weights(self) -> OnnxRecipe | None:
        """The same recipe with 8-bit weights, tried when 7-bit ones miss the gate; None if it has them."""
        if not self.reduce_range:
            return None
        why = (
            "7-bit weights missed the gate (half the resolution in every layer, which no few layers in float "
            "can restore); 8-bit ones, which smartbin's engine has ONNX Runtime run as u8 x u8 on a CPU without "
            "VNNI (session.x64quantprecision: exact, slower than 7-bit's u8 x s8)"
        )
        return replace(self, reduce_range=False, why=why)


ONNX_RECIPES = {
    "x86-vnni": OnnxRecipe(
        "x86 with VNNI (AVX-512 VNNI, AVX-VNNI, AMX)",
        "QUInt8",
        False,
        "vpdpbusd adds u8 x s8 products into 32 bits, so full 8-bit weights cannot saturate",
    ),
    "x86": OnnxRecipe(
        "x86 without VNNI (AVX2, AVX-512)",
        "QUInt8",
        True,
        "vpmaddubsw adds pairs of u8 x s8 products in 16 bits, which 8-bit weights can saturate and 7-bit "
        "ones cannot (2 x 255 x 64 < 32,768), keeping those fast kernels (ONNX Runtime's guidance)",
    ),
    "arm64": OnnxRecipe(
        "arm64 (Pi, Jetson CPU)",
        "QInt8",
        False,
        "the dot-product kernels multiply s8 x s8 into 32 bits; S8S8 is ONNX Runtime's default",
    ),
}


def onnx_recipe(target: str = "auto", flags: set[str] | None = None, machine: str | None = None) -> OnnxRecipe:
    """The recipe for ``target`` (x86-vnni, x86, arm64), or with ``auto`` for this machine's CPU."""
    if target != "auto":
        if target not in ONNX_RECIPES:
            raise SmartbinError(f"--onnx-target {target}: unknown (allowed: auto, {', '.join(ONNX_RECIPES)})")
        return ONNX_RECIPES[target]
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        return ONNX_RECIPES["arm64"]
    return ONNX_RECIPES["x86-vnni" if x86_int8_dot_product(flags) else "x86"]
