"""A quantized variant (int8, onnx_int8, dynamic) that misses its gate: find out why, then try what
can fix it, the gate deciding.

In order: the per-layer report (always written when asked, or when the gate fails); for onnx_int8,
8-bit weights where the recipe had 7-bit ones, then ONNX Runtime's other calibration methods
(Percentile, Entropy); then mixed precision: the worst
1, 2, 4 ... layers of the report (int8: with the layers on either side) kept in float until the gate
passes. What stayed float and what it costs in speed (measured with the device's engine on the
held-out images) goes to the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.export.recipes import OnnxRecipe
from convert.export.writers import CALIBRATION_CACHE, convert_tflite, quantize_onnx, tflite_converter
from convert.quantization.layers import (
    WORST,
    DynamicModel,
    OpGraph,
    TfliteInt8,
    float_sets,
    onnx_graph,
    onnx_layer_errors,
    tflite_graph,
)
from edge.formats.bundle import Attempt, GateResult, QuantizationReport

log = logging.getLogger(__name__)

DEBUG_IMAGES = 16  # the debugger runs every layer in float and int8: a few images rank them
CALIBRATIONS = ("Percentile", "Entropy")  # ONNX Runtime's, tried after MinMax


@dataclass
class Candidate:
    """A model file's bytes with its gate result and speed."""

    data: bytes
    gate: GateResult
    ms_per_image: float
    what: str
    recipe: OnnxRecipe | None = None  # onnx_int8: how it was quantized


# Writes the bytes as the variant's file, runs the engine on the held-out images: (gate, ms/image).
Evaluate = Callable[[bytes], tuple[GateResult, float]]


def better(a: GateResult, b: GateResult) -> bool:
    return (a.passed, a.agreement, a.top1) > (b.passed, b.agreement, b.top1)


def _onnx_int8(
    float_onnx: Path,
    candidate_path: Path,
    calibration: np.ndarray,
    evaluate: Evaluate,
    attempts: list[Candidate],
    cache: Path,
) -> tuple[Candidate, str]:
    """ONNX int8 with 8-bit weights (where the recipe had 7-bit ones), then with each other calibration
    method, until one passes; the best candidate and its calibration method."""
    current, method = attempts[0], "MinMax"
    wider = current.recipe.full_weights()
    tries = [("MinMax", wider, "8-bit weights, MinMax calibration")] if wider else []
    for other, recipe, label in [*tries, *((m, None, f"{m} calibration") for m in CALIBRATIONS)]:
        if current.gate.passed:
            break
        recipe = recipe or current.recipe
        quantize_onnx(float_onnx, candidate_path, calibration, method=other, recipe=recipe, cache=cache)
        gate, ms = evaluate(candidate_path.read_bytes())
        attempts.append(Candidate(candidate_path.read_bytes(), gate, ms, label, recipe))
        log.info("onnx_int8 with %s: agreement %.1f%%", label, 100 * gate.agreement)
        if better(gate, current.gate):
            current, method = attempts[-1], other
    return current, method


def _search(
    variant: str,
    sets: list[list[str]],
    mixed: Callable[[list[str]], bytes | None],
    evaluate: Evaluate,
    attempts: list[Candidate],
    current: Candidate,
) -> tuple[Candidate, list[str]]:
    """Mixed precision: each set of ops kept in float in turn, until one passes the gate (stops there)."""
    for names in sets:
        data = mixed(names)
        if data is None:  # nothing left quantized
            break
        gate, ms = evaluate(data)
        attempts.append(Candidate(data, gate, ms, f"{len(names)} op(s) in float", current.recipe))
        log.info("%s with %d op(s) in float: agreement %.1f%%", variant, len(names), 100 * gate.agreement)
        if gate.passed:
            return attempts[-1], names
    return current, []


def rescue(
    variant: str,
    current: Candidate,
    evaluate: Evaluate,
    calibration: np.ndarray,
    saved_model: Path | None,
    float_onnx: Path | None,
    mixed_precision: bool,
    work: Path,
) -> tuple[Candidate, QuantizationReport]:
    """The best candidate found (the current one when nothing beats it) and the report of the search;
    an onnx_int8 candidate carries the recipe it was quantized with."""
    debug = calibration[:DEBUG_IMAGES]
    attempts = [current]
    method = "MinMax"
    candidate_path = work / f"candidate-{variant}"
    cache = work / CALIBRATION_CACHE  # ONNX Runtime's activation ranges per method: calibrated once each
    if variant == "dynamic":
        # weights and input are quantized inside each hybrid op: no neighbour needs to stay float
        dynamic = DynamicModel(current.data, convert_tflite(saved_model, "float32", calibration))
        ranked, graph, mixed = dynamic.layer_errors(debug), OpGraph(dynamic.ops), dynamic.mixed
    elif variant == "int8":
        calibrated = TfliteInt8(tflite_converter(saved_model, "int8", calibration), debug)
        ranked, graph, mixed = calibrated.layer_errors(), tflite_graph(current.data), calibrated.mixed
    else:
        candidate_path.write_bytes(current.data)
        ranked = onnx_layer_errors(float_onnx, candidate_path, debug)
        graph = onnx_graph(float_onnx)
        current, method = _onnx_int8(float_onnx, candidate_path, calibration, evaluate, attempts, cache)

        def mixed(names: list[str]) -> bytes:
            recipe = current.recipe
            quantize_onnx(float_onnx, candidate_path, calibration, method, names, recipe=recipe, cache=cache)
            return candidate_path.read_bytes()

    best, float_layers = current, []
    if not best.gate.passed and mixed_precision:
        sets = float_sets(ranked, graph.neighbours)
        best, float_layers = _search(variant, sets, mixed, evaluate, attempts, current)
    candidate_path.unlink(missing_ok=True)
    report = QuantizationReport(
        calibration=(
            f"none, ranges measured on each input; layers ranked on {len(debug)} images"
            if variant == "dynamic"
            else f"{method}, {len(calibration)} images (stratified over classes)"
        ),
        attempts=[Attempt(what=a.what, agreement=a.gate.agreement, top1=a.gate.top1, kept=a is best) for a in attempts],
        float_layers=float_layers,
        float_op_types=graph.count(float_layers),
        quantized_ops=len(set(graph.ops) | {layer.name for layer in ranked}),
        ms_per_image=round(best.ms_per_image, 3) if float_layers else None,
        int8_ms_per_image=round(attempts[0].ms_per_image, 3) if float_layers else None,
        worst_layers=ranked[:WORST],
    )
    return best, report
