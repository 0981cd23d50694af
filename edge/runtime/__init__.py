"""Inference backends behind one small interface, chosen by name (``auto`` picks the best)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

from edge.bundle import VARIANT_FILES, Bundle, is_onnx
from edge.errors import SmartbinError
from edge.runtime.base import Engine

log = logging.getLogger(__name__)

# backend name -> (module holding the Engine class, module that must be importable)
BACKENDS: dict[str, tuple[str, str]] = {
    "litert": ("edge.runtime.litert", "ai_edge_litert"),
    "tflite_runtime": ("edge.runtime.tflite_runtime", "tflite_runtime"),
    "tensorflow": ("edge.runtime.tensorflow_lite", "tensorflow"),
    "onnxruntime": ("edge.runtime.onnx", "onnxruntime"),
}
TFLITE_BACKENDS = ("litert", "tflite_runtime", "tensorflow")


def available_backends() -> list[str]:
    """Backends whose library is installed here."""
    return [name for name, (_, lib) in BACKENDS.items() if importlib.util.find_spec(lib) is not None]


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def choose(bundle: Bundle, backend: str = "auto", variant: str | None = None) -> tuple[str, str]:
    """Resolve ``auto`` for backend and variant against what is installed and in the bundle."""
    have = available_backends()
    variants = bundle.variant_names()
    if backend != "auto" and backend not in BACKENDS:
        raise SmartbinError(f"unknown backend {backend!r} (allowed: auto, {', '.join(BACKENDS)})")
    if backend != "auto" and backend not in have:
        raise SmartbinError(f"backend {backend!r} is not installed here (installed: {', '.join(have) or 'none'})")
    if variant is None:
        if backend == "onnxruntime" or (backend == "auto" and "onnx" in variants and _has_gpu_provider()):
            variant = "onnx"
        else:
            variant = next((v for v in VARIANT_FILES if v in variants), None)
    if variant not in variants:
        raise SmartbinError(f"variant {variant!r} is not in {bundle.path} (it has: {', '.join(variants)})")
    if backend == "auto":
        candidates = ["onnxruntime"] if is_onnx(variant) else list(TFLITE_BACKENDS)
        backend = next((b for b in candidates if b in have), "")
        if not backend:
            raise SmartbinError(f"no installed backend runs the {variant} variant (install smartbin[edge])")
    elif is_onnx(variant) != (backend == "onnxruntime"):
        raise SmartbinError(f"backend {backend!r} cannot run variant {variant!r}")
    return backend, variant


def _has_gpu_provider() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return bool({"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(onnxruntime.get_available_providers()))


def open_engine(
    bundle: Bundle,
    backend: str = "auto",
    variant: str | None = None,
    threads: int | None = None,
    delegate: str | None = None,
) -> Engine:
    """Verify the variant's file against the manifest, load it, and check its shapes."""
    backend, variant = choose(bundle, backend, variant)
    path = bundle.file(variant)
    module = importlib.import_module(BACKENDS[backend][0])
    engine: Engine = module.ENGINE(path, threads or default_threads(), delegate)
    engine.variant = variant
    bundle.check_model_shape(variant, engine.input_shape, engine.num_classes)
    log.info("loaded %s with %s (%s)", path, backend, engine.describe())
    return engine
