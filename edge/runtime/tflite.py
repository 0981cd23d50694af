"""The TFLite interpreter family (LiteRT, tflite-runtime, tf.lite) behind the Engine interface."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from edge.errors import BundleError
from edge.runtime.base import Engine

log = logging.getLogger(__name__)


class TFLiteEngine(Engine):
    """Subclasses name the module that provides ``Interpreter`` and ``load_delegate``."""

    @staticmethod
    def interpreter_module() -> ModuleType:
        raise NotImplementedError

    def __init__(self, path: Path, threads: int, delegate: str | None = None):
        super().__init__(path, threads, delegate)
        module = self.interpreter_module()
        delegates = self._load_delegate(module, delegate, path)
        try:
            self.interpreter = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_delegates=delegates
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a loadable TFLite model: {exc}") from None
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_dtype = np.dtype(inp["dtype"])
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.num_classes = int(out["shape"][-1])
        scale, zero = out["quantization"]
        self._dequant = (float(scale), int(zero)) if scale else None
        self._batch = self.input_shape[0]

    def _load_delegate(self, module: ModuleType, delegate: str | None, path: Path) -> list:
        """Load a delegate library; on failure warn and fall back to the CPU (XNNPACK)."""
        if delegate is None and path.name.endswith("_edgetpu.tflite"):
            delegate = "libedgetpu.so.1"
        if not delegate:
            self.delegate = "xnnpack"
            return []
        try:
            loaded = module.load_delegate(delegate)
        except (ValueError, OSError, RuntimeError) as exc:
            log.warning("delegate %s could not be loaded (%s); falling back to CPU (XNNPACK)", delegate, exc)
            self.delegate = "xnnpack"
            return []
        self.delegate = delegate
        return [loaded]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._in_index, [batch.shape[0], *self.input_shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self._in_index, batch)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out_index)
        if self._dequant is not None:
            scale, zero = self._dequant
            return (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32, copy=False)
