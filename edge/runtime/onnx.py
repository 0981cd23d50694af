"""ONNX Runtime with TensorRT -> CUDA -> CPU providers (Jetson), CPU elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.errors import BundleError
from edge.runtime.base import NO_DELEGATE, Engine

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
        for name in wanted:
            if name == "TensorrtExecutionProvider":
                # Engines are cached beside the model: the slow first build happens once per board.
                cache = path.parent / "trt_cache"
                providers.append(
                    (
                        name,
                        {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_fp16_enable": True},
                    )
                )
            else:
                providers.append(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Without the arena and pre-planned buffers a ResNet50 int8 session peaks ~22 MB lower, same speed here.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0].astype(np.float32, copy=False)


ENGINE = OnnxEngine
