"""TFLite conversions (and the bench's peak probes) in a second process while this one converts ONNX and
gates.

Each TFLite conversion uses one core, and TFLite's converter holds the GIL, so a thread would not help
(two 12 s conversions in two threads took 26 s, measured); a process does. It costs a TensorFlow start
(~8 s of one core), so only large models are converted there.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.formats.bundle import ProbeFile
from edge.formats.variants import SECOND_PROCESS, VARIANT_FILES

if TYPE_CHECKING:
    from convert.export.recipes import OnnxRecipe

log = logging.getLogger(__name__)

# the longest first (int8 calibrates), so that this process gates it while the others convert; float32 stays
# here: ONNX converts from it
# from ~5 M weights: ResNet50's (98 MB) conversions take 6-40 s each, resnet-mini's (1.5 MB) under 1 s
MIN_MODEL_BYTES = 20_000_000

_worker_context = ExitStack()  # held for the worker process's life


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker() -> None:
    from convert.export.writers import one_load_per_saved_model

    _worker_context.enter_context(one_load_per_saved_model())


def _convert(saved_model: str, variant: str, calibration: np.ndarray, path: str) -> float:
    from convert.export.writers import convert_tflite

    start = time.perf_counter()
    Path(path).write_bytes(convert_tflite(Path(saved_model), variant, calibration))
    return time.perf_counter() - start


def _write_probes(folder: str, onnx: bool, recipe: OnnxRecipe) -> dict[str, ProbeFile]:
    from convert.export.probe import write_probes

    return write_probes(Path(folder), onnx, recipe)


class BackgroundConversions:
    """The TFLite variants a second process converts; nothing when the machine has one core or the model is
    small. The process starts (and imports TensorFlow) at once, while this one loads the model."""

    def __init__(self, variants: list[str], model_bytes: int, min_bytes: int = MIN_MODEL_BYTES, min_cores: int = 2):
        self.variants = [v for v in SECOND_PROCESS if v in variants]
        self.futures: dict[str, Future] = {}
        self.probes: Future | None = None
        self.converting = False  # the variants went to the second process
        self.pool: ProcessPoolExecutor | None = None
        if usable_cores() < min_cores or model_bytes < min_bytes or not self.variants:
            self.variants = []
            return
        spawn = multiprocessing.get_context("spawn")  # TensorFlow's threads do not survive a fork
        self.pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=_start_worker)
        self.pool.submit(int)  # the process starts with its first task

    def submit(self, saved_model: Path, calibration: np.ndarray, folder: Path) -> None:
        """Convert every variant of the SavedModel into ``folder``, one after another."""
        try:
            for variant in self.variants:
                path = str(folder / VARIANT_FILES[variant])
                self.futures[variant] = self.pool.submit(_convert, str(saved_model), variant, calibration, path)
        except BrokenProcessPool:
            log.warning("the conversion process ended as it started; converting %s here", ", ".join(self.variants))
            self.futures.clear()
            return
        self.converting = bool(self.futures)
        if self.variants:
            log.info("converting %s in a second process (%d cores)", ", ".join(self.variants), usable_cores())

    def submit_probes(self, folder: Path, onnx: bool, recipe: OnnxRecipe) -> None:
        """Write the peak probes into ``folder`` once the variants are converted (nothing when no second
        process converts)."""
        if self.converting:
            try:
                self.probes = self.pool.submit(_write_probes, str(folder), onnx, recipe)
            except BrokenProcessPool:
                self.probes = None

    def probe_files(self) -> dict[str, ProbeFile] | None:
        """Wait for the probes' entries; None when this process must write them."""
        try:
            return self.probes.result() if self.probes else None
        except BrokenProcessPool:
            log.warning("the conversion process ended before the peak probes were written; writing them here")
            return None

    def pending(self, variant: str) -> bool:
        """Whether ``variant`` is being converted there."""
        return variant in self.futures

    def order(self, variant: str) -> int:
        """Where ``variant`` comes: -1 for this process's own, then in the order the second one converts."""
        return self.variants.index(variant) if self.pending(variant) else -1

    def result(self, variant: str) -> float | None:
        """Wait for ``variant``'s file; the seconds its conversion took, or None when this process must
        convert it (not submitted, or the worker died: out of memory, killed)."""
        future = self.futures.pop(variant, None)
        if future is None:
            return None
        try:
            return future.result()
        except BrokenProcessPool:
            log.warning("the conversion process ended before %s was converted; converting it here", variant)
            return None

    def close(self) -> None:
        """Stop the second process: what it has not started is dropped, what it is converting ends first."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
