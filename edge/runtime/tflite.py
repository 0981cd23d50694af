"""The TFLite interpreter family (LiteRT, tflite-runtime, tf.lite) behind the Engine interface."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from edge.errors import BundleError
from edge.runtime.base import NO_DELEGATE, Engine

log = logging.getLogger(__name__)

# MACs of one output element: the weights' dimensions that one output sums over
MAC_DIMS = {"CONV_2D": slice(1, None), "DEPTHWISE_CONV_2D": slice(1, 3), "FULLY_CONNECTED": slice(-1, None)}


def delegated_nodes(names: list[str], inputs: list[list[int]], outputs: list[list[int]]) -> tuple[int, int]:
    """(model nodes that delegate kernels took over, model nodes) from the node list after delegation.

    Delegation appends one DELEGATE node per partition and leaves the replaced nodes in the list,
    out of the execution plan. A partition's nodes are those reached by walking back from its
    DELEGATE node's outputs to its inputs (TFLite's own "Replacing N out of M node(s)" figure,
    which LiteRT does not print).
    """
    model = [i for i, name in enumerate(names) if name != "DELEGATE"]
    producer = {t: i for i in model for t in outputs[i]}
    taken: set[int] = set()
    for node in (i for i, name in enumerate(names) if name == "DELEGATE"):
        boundary = set(inputs[node])
        stack = list(outputs[node])
        while stack:
            tensor = stack.pop()
            source = producer.get(tensor)
            if tensor in boundary or source is None or source in taken:
                continue
            taken.add(source)
            stack.extend(t for t in inputs[source] if t >= 0)
    return len(taken), len(model)


def model_flops(interpreter) -> int:
    """Multiply-adds x 2 of the convolutions and dense layers: the arithmetic a floor is computed from."""
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    macs = 0
    for op in interpreter._get_ops_details():  # no public API lists the operators
        dims = MAC_DIMS.get(op["op_name"])
        if dims is not None:
            macs += int(np.prod(shapes[op["outputs"][0]])) * int(np.prod(shapes[op["inputs"][1]][dims]))
    return 2 * macs


class TFLiteEngine(Engine):
    """Subclasses name the module that provides ``Interpreter`` and ``load_delegate``."""

    module: str = ""  # imported only when this backend is chosen

    def interpreter_module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def __init__(self, path: Path, threads: int, delegate: str | None = None):
        super().__init__(path, threads, delegate)
        module = self.interpreter_module()
        delegates = self._load_delegate(module, delegate, path)
        options = {}
        if delegate == NO_DELEGATE:
            options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_delegates=delegates, **options
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a loadable TFLite model: {exc}") from exc
        self._check_delegation()
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
        if delegate == NO_DELEGATE:
            return []
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

    def _check_delegation(self) -> None:
        """Count the nodes the delegate really took; one that took none is not reported as running."""
        wrapper = self.interpreter._interpreter  # node lists after delegation are not public API
        count = wrapper.NumNodes()
        names = [wrapper.NodeName(i) for i in range(count)]
        inputs = [[int(t) for t in wrapper.NodeInputs(i)] for i in range(count)]
        outputs = [[int(t) for t in wrapper.NodeOutputs(i)] for i in range(count)]
        taken, total = delegated_nodes(names, inputs, outputs)
        if self.delegate and not taken:
            log.warning(
                "delegate %s took none of the model's %d operations; running on plain CPU kernels", self.delegate, total
            )
            self.delegate = None
        self.delegate_nodes = {"delegate": self.delegate, "delegated": taken, "total": total}

    def flops(self) -> int:
        return model_flops(self.interpreter)

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
