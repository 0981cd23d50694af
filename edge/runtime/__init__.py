"""Inference backends behind one small interface, chosen by name (``auto`` picks the best)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path

from edge.errors import SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.variants import VARIANT_FILES, is_onnx
from edge.runtime.base import Engine
from edge.runtime.headed import HeadedEngine

log = logging.getLogger(__name__)

# backend name -> (module holding the Engine class, module that must be importable, file format it runs),
# in the order ``auto`` prefers them. The one rule of which backend runs which variant derives from it.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "litert": ("edge.runtime.litert", "ai_edge_litert", "tflite"),
    "tflite_runtime": ("edge.runtime.tflite_runtime", "tflite_runtime", "tflite"),
    "tensorflow": ("edge.runtime.tensorflow_lite", "tensorflow", "tflite"),
    "onnxruntime": ("edge.runtime.onnx", "onnxruntime", "onnx"),
}
TFLITE_BACKENDS = tuple(name for name, (_, _, fmt) in BACKENDS.items() if fmt == "tflite")


def runs(backend: str, variant: str) -> bool:
    """Whether ``backend`` can run ``variant`` (a TFLite interpreter the .tflite files, ONNX Runtime the .onnx)."""
    return BACKENDS[backend][2] == ("onnx" if is_onnx(variant) else "tflite")


def backend_for(variant: str, backend: str = "auto", have: list[str] | None = None) -> str:
    """The backend that runs ``variant``: ``backend`` itself if it can, else (auto) the first installed one."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise SmartbinError(f"unknown backend {backend!r} (allowed: auto, {', '.join(BACKENDS)})")
        if not runs(backend, variant):
            raise SmartbinError(f"backend {backend!r} cannot run variant {variant!r}")
        return backend
    have = available_backends() if have is None else have
    chosen = next((b for b in BACKENDS if b in have and runs(b, variant)), None)
    if chosen is None:
        raise SmartbinError(f"no installed backend runs the {variant} variant (install smartbin[edge])")
    return chosen


def available_backends() -> list[str]:
    """Backends whose library is installed here."""
    return [name for name, (_, lib, _) in BACKENDS.items() if importlib.util.find_spec(lib) is not None]


def default_threads() -> int:
    """`threads: auto`: every core, up to 4. Measured on 2 cores with the broker and a subscriber on the
    same machine: 2 threads gave e2e p50 7.4 ms against 12.8 ms with one core left free (once the MQTT
    socket sends without Nagle's delay, nothing is gained by leaving a core idle)."""
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
    return backend_for(variant, backend, have), variant


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
    """Verify the variant's file against the manifest, load it, and check its shapes; a bundle in two parts
    gives its backbone and its head as one engine."""
    backend, variant = choose(bundle, backend, variant)
    path = bundle.file(variant)
    engine = load_model_file(path, backend, threads, delegate)
    engine.variant = variant
    bundle.check_model_shape(variant, engine.input_shape, engine.num_classes)
    log.info("loaded %s with %s (%s)", path, backend, engine.describe())
    head = bundle.head()
    return engine if head is None else HeadedEngine(engine, head)


def load_model_file(path: Path, backend: str, threads: int | None = None, delegate: str | None = None) -> Engine:
    """Any model file (a variant or a peak probe) in ``backend``'s engine, without the bundle's checks."""
    module = importlib.import_module(BACKENDS[backend][0])
    return module.ENGINE(path, threads or default_threads(), delegate)
