"""Why a quantized variant disagrees with Keras, layer by layer, and the fewest layers to keep in float.

Both formats get the same measure: each activation's worst channel SQNR, in dB (lower is worse).
A tensor's int8 range is one per tensor, so one outlier channel (typical after BatchNorm folding)
can leave the other channels a handful of steps, or none: the worst channel shows it where the
whole tensor's SQNR and the RMSE in steps both look fine. TFLite's numbers come from
``tf.lite.experimental.QuantizationDebugger`` (each int8 op beside its float twin), ONNX's from
ONNX Runtime's QDQ loss debugger (every intermediate tensor of the float and the QDQ model).
Keeping a layer "in float" keeps its input and output tensors float: the layer and its neighbours.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.export.writers import image_reader, onnx_input_name, prepare_onnx, quiet_stdout
from edge.formats.bundle import LayerError

WORST = 10  # layers in the report
METRIC = "channel_sqnr_db"


def channel_sqnr(reference: Sequence[np.ndarray], quantized: Sequence[np.ndarray], axis: int) -> float:
    """The lowest per-channel signal-to-quantization-noise ratio (dB) over the images; idle channels skipped."""
    f = np.moveaxis(np.stack([np.asarray(a, np.float64) for a in reference]), axis if axis < 0 else axis + 1, -1)
    q = np.moveaxis(np.stack([np.asarray(a, np.float64) for a in quantized]), axis if axis < 0 else axis + 1, -1)
    f, q = f.reshape(-1, f.shape[-1]), q.reshape(-1, q.shape[-1])
    signal, noise = (f**2).mean(0), ((f - q) ** 2).mean(0)
    # A channel with a ten-thousandth of the tensor's mean power carries nothing downstream (a ReLU
    # channel that is almost always 0): its ratio would be noise over nothing, not a lost signal.
    alive = signal > max(1e-4 * float(signal.mean()), 1e-12)
    if not alive.any():
        return math.inf
    return float(10 * np.log10(signal[alive] / np.maximum(noise[alive], 1e-12 * signal[alive])).min())


def _images(images: np.ndarray):
    return lambda: ([image[None]] for image in images)


def _tflite_sqnr(reference, quantized, scale: float, zero_point: int) -> float:
    return channel_sqnr(reference, [(np.asarray(q, np.float64) - zero_point) * scale for q in quantized], -1)


class TfliteInt8:
    """One calibration of the full-integer TFLite model, made once and reused: the layer ranking and every
    mixed-precision candidate are quantized from the same calibrated model (TFLite's
    ``QuantizationDebugger`` keeps it), so a search of N candidates calibrates once, not N + 1 times."""

    def __init__(self, converter, images: np.ndarray):
        import tensorflow as tf

        options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={METRIC: _tflite_sqnr})
        with quiet_stdout():
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_images(images), debug_options=options
            )
            self.debugger.run()

    def layer_errors(self) -> list[LayerError]:
        """Every quantized activation of the int8 model, worst channel SQNR first."""
        dump = io.StringIO()
        self.debugger.layer_statistics_dump(dump)
        layers = []
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            scale, zero = float(row["scale"]), int(float(row["zero_point"]))
            error = float(row[METRIC])
            if scale and math.isfinite(error):
                layers.append(
                    LayerError(
                        name=row["tensor_name"],
                        op=row["op_name"],
                        metric=METRIC,
                        error=round(error, 2),
                        range=(round((-128 - zero) * scale, 4), round((127 - zero) * scale, 4)),
                    )
                )
        return sorted(layers, key=lambda layer: layer.error)

    def mixed(self, float_nodes: Sequence[str]) -> bytes | None:
        """The int8 model with ``float_nodes`` (ops, by output tensor name) left in float; None when that
        leaves no op quantized (the float model, not a mixed one)."""
        import tensorflow as tf

        try:
            with quiet_stdout():  # re-quantizes the calibrated model: no calibration again
                self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=list(float_nodes)
                )
        except ValueError:  # "check if the quantized model is in debug mode": nothing left to verify
            return None
        return self.debugger.get_nondebug_quantized_model()


@dataclass
class OpGraph:
    """A model's operations by the names a float list uses (name -> kind), and each one's neighbours: the
    operations that write its inputs and read its outputs."""

    ops: dict[str, str]
    neighbours: dict[str, list[str]] = field(default_factory=dict)

    def count(self, names: Sequence[str]) -> dict[str, int]:
        """How many of ``names`` are of each kind of operation, most first."""
        return dict(Counter(self.ops.get(name, "?") for name in names).most_common())


def tflite_graph(model: bytes) -> OpGraph:
    """The int8 model's operations, named by their output tensor as TFLite's denylist names them."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if len(op["outputs"])]  # the op graph is not public API
    produced = {names[op["outputs"][0]] for op in ops}
    edges = [(names[t], names[op["outputs"][0]]) for op in ops for t in op["inputs"] if names.get(t) in produced]
    return OpGraph({names[op["outputs"][0]]: op["op_name"] for op in ops}, _neighbours(edges))


def _neighbours(edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Writer -> reader edges as a map from each node to the nodes on either side of it."""
    out: dict[str, list[str]] = {}
    for writer, reader in edges:
        out.setdefault(writer, []).append(reader)
        out.setdefault(reader, []).append(writer)
    return out


class DynamicModel:
    """A dynamic-range TFLite model beside the float32 model of the same SavedModel, op by op.

    TFLite's converter has no denylist for dynamic range quantization, and its debugger works on
    full-integer models only, so both jobs are done here on the flatbuffer: a hybrid op (float input,
    int8 weights) is kept in float by giving it back its float weights.
    """

    def __init__(self, model: bytes, float_model: bytes) -> None:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils

        self._utils = flatbuffer_utils
        self.model = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
        reference = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
        ref_graph, graph = reference.subgraphs[0], self.model.subgraphs[0]
        ref_ops = {ref_graph.tensors[op.outputs[0]].name: op for op in ref_graph.operators if len(op.outputs)}
        # each hybrid op by output name: its int8 weight tensors, with their own and their float state
        self.hybrid: dict[str, list[tuple]] = {}
        self.ops: dict[str, str] = {}
        for op in graph.operators:
            inputs = [graph.tensors[i] if i >= 0 else None for i in op.inputs]
            name = graph.tensors[op.outputs[0]].name
            if not inputs or inputs[0] is None or inputs[0].type != schema.TensorType.FLOAT32 or name not in ref_ops:
                continue
            weights = []
            for k, tensor in enumerate(inputs[1:], 1):
                constant = tensor is not None and self.model.buffers[tensor.buffer].data is not None
                if constant and tensor.type == schema.TensorType.INT8:
                    original = ref_graph.tensors[ref_ops[name].inputs[k]]
                    weights.append(
                        (
                            tensor,
                            (tensor.type, tensor.quantization, self.model.buffers[tensor.buffer].data),
                            (original.type, None, reference.buffers[original.buffer].data),
                        )
                    )
            if weights:
                self.hybrid[name.decode()] = weights
                self.ops[name.decode()] = flatbuffer_utils.opcode_to_name(self.model, op.opcodeIndex)

    def with_float(self, float_nodes: Sequence[str]) -> bytes:
        """The model with the named hybrid ops in float (names of other ops are ignored)."""
        keep = set(float_nodes)
        for name, weights in self.hybrid.items():
            for tensor, quantized, original in weights:
                tensor.type, tensor.quantization, data = original if name in keep else quantized
                self.model.buffers[tensor.buffer].data = data
        return bytes(self._utils.convert_object_to_bytearray(self.model))

    def mixed(self, float_nodes: Sequence[str]) -> bytes | None:
        """:meth:`with_float`, or None when that leaves no hybrid op (the float model, not a mixed one)."""
        return None if set(self.hybrid) <= set(float_nodes) else self.with_float(float_nodes)

    def layer_errors(self, images: np.ndarray) -> list[LayerError]:
        """Each hybrid op alone quantized in the float model: the output's SQNR (dB) on the images, worst first."""
        from ai_edge_litert.interpreter import Interpreter

        def outputs(model: bytes) -> np.ndarray:
            interpreter = Interpreter(model_content=model)
            interpreter.allocate_tensors()
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            result = []
            for image in images:
                interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
                interpreter.invoke()
                result.append(interpreter.get_tensor(out["index"])[0].astype(np.float64))
            return np.stack(result)

        names = list(self.hybrid)
        reference = outputs(self.with_float(names))
        layers = []
        for name in names:
            quantized = outputs(self.with_float([n for n in names if n != name]))
            noise = float(((reference - quantized) ** 2).sum())
            error = 10 * math.log10(float((reference**2).sum()) / max(noise, 1e-30))
            weights = np.frombuffer(bytes(self.hybrid[name][0][2][2]), np.float32)
            layers.append(
                LayerError(
                    name=name,
                    op=self.ops[name],
                    metric="output_sqnr_db",
                    error=round(error, 2),
                    range=(round(float(weights.min()), 4), round(float(weights.max()), 4)),
                )
            )
        return sorted(layers, key=lambda layer: layer.error)


def onnx_layer_errors(float_model: Path, qdq_model: Path, images: np.ndarray) -> list[LayerError]:
    """Every activation of the QDQ model against the float model's, worst channel SQNR first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    name = onnx_input_name(float_model)
    with tempfile.TemporaryDirectory(prefix="smartbin-qdq-") as tmp:
        prepared = prepare_onnx(float_model, Path(tmp) / "prepared.onnx")  # the graph the QDQ model was made from
        producers = {out: node for node in onnx.load(str(prepared)).graph.node for out in node.output}
        acts = {}
        for kind, model in (("float", prepared), ("qdq", qdq_model)):
            augmented = Path(tmp) / f"{kind}.onnx"
            modify_model_output_intermediate_tensors(str(model), str(augmented))
            acts[kind] = collect_activations(str(augmented), image_reader(name, images))
    matching = create_activation_matching(acts["qdq"], acts["float"])
    layers = []
    for tensor, pair in matching.items():
        node = producers.get(tensor)
        if node is None or "float" not in pair or "pre_qdq" not in pair:
            continue
        reference, quantized = pair["float"], pair["post_qdq"] if "post_qdq" in pair else pair["pre_qdq"]
        error = channel_sqnr(reference, quantized, 1 if np.ndim(reference[0]) >= 2 else -1)  # NCHW / NC
        if math.isfinite(error):
            values = np.concatenate([np.ravel(a) for a in reference])
            layers.append(
                LayerError(
                    name=node.name,
                    op=node.op_type,
                    metric=METRIC,
                    error=round(error, 2),
                    range=(round(float(values.min()), 4), round(float(values.max()), 4)),
                )
            )
    return sorted(layers, key=lambda layer: layer.error)


def onnx_graph(float_model: Path) -> OpGraph:
    """The nodes of the graph quantization works on (ONNX Runtime's pre-processed one), by node name."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="smartbin-qdq-") as tmp:
        graph = onnx.load(str(prepare_onnx(float_model, Path(tmp) / "prepared.onnx"))).graph
    producer = {out: node.name for node in graph.node for out in node.output}
    edges = [(producer[t], node.name) for node in graph.node for t in node.input if t in producer]
    return OpGraph({node.name: node.op_type for node in graph.node}, _neighbours(edges))


def float_sets(ranked: Sequence[LayerError], neighbours: dict[str, list[str]]) -> list[list[str]]:
    """Nodes to keep in float for the worst 1, 2, 4 ... layers: each layer and the layers on either side,
    so that neither its input nor its output is quantized between them.

    The last set would be every layer (the float model): not a mixed-precision model, left out.
    """
    sets, count = [], 1
    while count < len(ranked):
        nodes: list[str] = []
        for layer in ranked[:count]:
            for node in [layer.name, *neighbours.get(layer.name, [])]:
                if node not in nodes:
                    nodes.append(node)
        if not sets or nodes != sets[-1]:
            sets.append(nodes)
        count *= 2
    return sets


def markdown(reports: dict[str, dict]) -> str:
    """quantization.md: per variant, calibration, what stayed float and the worst layers."""
    lines = [
        "# Quantization report",
        "",
        "Error per layer: the worst channel's signal-to-quantization-noise ratio against the float model,",
        "in dB (lower is worse; under ~10 dB a channel has lost most of what it carried).",
        "",
    ]
    for variant, report in reports.items():
        lines += [f"## {variant}", ""]
        lines.append(f"- calibration: {report['calibration']}")
        for attempt in report["attempts"]:
            lines.append(
                f"- tried {attempt['what']}: agreement {attempt['agreement']:.1%}, top-1 {attempt['top1']:.1%}"
                + (" (kept)" if attempt.get("kept") else "")
            )
        if report["float_layers"]:
            lines.append(f"- left in float: {', '.join(f'`{n}`' for n in report['float_layers'])}")
        if report.get("ms_per_image"):
            lines.append(
                f"- speed on the held-out images: {report['ms_per_image']:.2f} ms/image, "
                f"full integer {report['int8_ms_per_image']:.2f} ms/image"
            )
        lines += ["", "| layer | op | error | range (activations; dynamic: weights) |", "|---|---|---|---|"]
        for layer in report["worst_layers"]:
            lines.append(
                f"| `{layer['name'][:80]}` | {layer['op']} | {layer['error']} {layer['metric']} | "
                f"{layer['range'][0]} … {layer['range'][1]} |"
            )
        lines.append("")
    return "\n".join(lines)
