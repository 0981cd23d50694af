"""ONNX Runtime with TensorRT -> CUDA -> CPU providers (Jetson), CPU elsewhere."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from edge.errors import BundleError
from edge.runtime.base import NO_DELEGATE, Engine
from edge.system.atomic import link_or_copy
from edge.system.cpu import is_x86, x86_int8_dot_product

log = logging.getLogger(__name__)

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# ONNX Runtime says how many nodes each provider took only in its verbose log, at session creation
# ("Node(s) placed on [P]. Number of nodes: N"): edge/bench.py turns it on in its workers to read it.
LOG_PLACEMENT = False


ONNX_TYPES = {
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


CACHE_DIR = "trt_cache"
X86_EXACT_INT8 = "session.x64quantprecision"  # ONNX Runtime's Avx2WeightS8ToU8Transformer


def engine_cache(model: Path) -> tuple[Path, Path | None]:
    """(the TensorRT engine cache beside ``model``, the folder to build one in when there is none yet).

    Engines are cached beside the model, so the slow first build (minutes on a Jetson) happens once
    per board. A build goes to a folder of its own that is renamed into place only when complete: a
    daemon killed mid-build (the start timeout, a power cut) leaves no half-written engine to load."""
    cache = model.parent / CACHE_DIR
    for stale in model.parent.glob(f"{CACHE_DIR}.partial-*"):
        if not _running(stale.name.rsplit("-", 1)[1]):  # its builder died
            shutil.rmtree(stale, ignore_errors=True)
    if cache.is_dir():
        return cache, None
    building = model.parent / f"{CACHE_DIR}.partial-{os.getpid()}"
    building.mkdir(parents=True, exist_ok=True)
    return cache, building


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def share_engine_cache(source: Path, dest: Path) -> None:
    """A head update's bundle in ``dest`` has the backbone of the one in ``source``: so has the TensorRT engine
    built for it (hard links), and its next start builds none."""
    cache = source / CACHE_DIR
    if not cache.is_dir():
        return
    (dest / CACHE_DIR).mkdir(exist_ok=True)
    for file in cache.iterdir():
        if file.is_file():
            link_or_copy(file, dest / CACHE_DIR / file.name)


def finish_engine_cache(building: Path, cache: Path) -> None:
    try:
        building.rename(cache)
        log.info("TensorRT engine cached in %s", cache)
    except OSError:  # another process finished one first, or the folder is read-only: this build is not kept
        shutil.rmtree(building, ignore_errors=True)


class OnnxEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int, delegate: str | None = None):
        super().__init__(path, threads, delegate)
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = [p for p in PREFERRED if p in available]
        if delegate == NO_DELEGATE:
            wanted = ["CPUExecutionProvider"]
        elif delegate and delegate not in available:
            log.warning("provider %s is not available (have: %s); using %s", delegate, sorted(available), wanted[0])
        elif delegate:
            wanted = [delegate] + [p for p in wanted if p != delegate]
        providers: list = []
        building: Path | None = None  # a fresh engine cache, renamed into place once complete
        for name in wanted:
            if name == "TensorrtExecutionProvider":
                cache, building = engine_cache(path)
                options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(building or cache)}
                providers.append((name, {**options, "trt_fp16_enable": True}))
            else:
                providers.append(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Without the arena and pre-planned buffers a ResNet50 int8 session peaks ~22 MB lower, same speed here.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        if is_x86() and not x86_int8_dot_product():
            # Without VNNI, u8 x s8 kernels add product pairs in 16 bits, which 8-bit weights saturate:
            # ONNX Runtime then runs such weights (not 7-bit ones) as u8 x u8, exactly, so an int8 model
            # computes here what it computed at its gate on any CPU (docs/quantization.md).
            options.add_session_config_entry(X86_EXACT_INT8, "1")
        if LOG_PLACEMENT:
            options.log_severity_level = 0
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise BundleError(f"{path}: not a loadable ONNX model: {exc}") from exc
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self.input_dtype = np.dtype(ONNX_TYPES.get(inp.type, np.uint8))
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])
        self.delegate = self.session.get_providers()[0]
        if building is not None:
            self.infer(np.zeros(self.input_shape, self.input_dtype))  # the engine is built by the first run at latest
            finish_engine_cache(building, path.parent / CACHE_DIR)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0].astype(np.float32, copy=False)


ENGINE = OnnxEngine
