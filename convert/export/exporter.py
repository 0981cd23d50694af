"""`smartbin convert`: Keras model -> float32/float16/dynamic/int8 TFLite (+ ONNX) bundle with a manifest.

Every variant is run on held-out images and compared with the Keras model; a variant
that misses its gate fails the command unless ``--allow-accuracy-drop`` is given.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from rich.console import Console

from convert.export.gate import describe_failure, gate, gate_images
from convert.export.parallel import BackgroundConversions
from convert.export.probe import write_probes
from convert.export.recipes import onnx_recipe
from convert.export.source import Source, calibration_samples, check_out, load_source
from convert.export.split import split_head, write_head
from convert.export.summary import summary_table
from convert.export.writers import (
    CALIBRATION_CACHE,
    convert_onnx,
    convert_tflite,
    export_saved_model,
    one_load_per_saved_model,
    quantize_onnx,
)
from convert.quantization.batchnorm import fold_batchnorm
from convert.quantization.layers import markdown as quantization_markdown
from convert.quantization.rescue import Candidate, rescue
from convert.training.model import load_model, predict
from edge.errors import SmartbinError
from edge.formats.bundle import (
    ACCEPTANCE_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    AcceptanceFile,
    Bundle,
    GateResult,
    InputSpec,
    LabelEntry,
    Manifest,
    VariantFile,
    sha256_file,
)
from edge.formats.variants import BY_NAME, ONNX_VARIANTS, TFLITE_VARIANTS, VARIANT_FILES, is_onnx
from edge.runtime import open_engine
from edge.system.versions import installed_versions
from edge.vision.decision import VoteSettings
from edge.vision.preprocess import load_images

log = logging.getLogger(__name__)

MOSTLY_FLOAT = 0.25  # a mixed-precision variant with more of its operations in float is called out
ACCEPTANCE_IMAGES = 8  # in the bundle for the device's own check of an update (~12 kB each at 64 px)
TRTEXEC_HINT = "trtexec --onnx={onnx} --saveEngine={engine} --fp16"


@dataclass
class ExportOptions:
    variants: list[str] = field(default_factory=lambda: list(TFLITE_VARIANTS))
    onnx: bool = False
    data: str | None = None
    calib_samples: int = 100
    gate_images: int = 500  # images the agreement is measured on (held-out, spare training, copies)
    min_confidence: float = VoteSettings.min_confidence  # agreement counts where the bin would act
    onnx_target: str = "auto"  # the CPU model_int8.onnx is quantized for (convert/export/recipes.py ONNX_RECIPES)
    allow_accuracy_drop: bool = False
    quant_report: bool = False  # the per-layer report even when the integer variants pass
    mixed_precision: bool = True  # keep the worst layers in float where full integer misses the gate
    name: str | None = None
    seed: int = 0
    probes: bool = True
    force: bool = False  # replace an --out folder that is not a bundle
    jobs: int = 2  # processes converting at once (convert/export/parallel.py)
    split_head: bool = False  # variants are backbones, the head beside them (convert/export/split.py)


def _versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        **installed_versions(("keras", "ai-edge-litert", "onnx", "onnxruntime", "tf2onnx")),
    }


def _entry(path: Path, variant: str, seconds: float) -> VariantFile:
    return VariantFile(
        file=path.name,
        format="onnx" if is_onnx(variant) else "tflite",
        sha256=sha256_file(path),
        size=path.stat().st_size,
        input_dtype="uint8",
        output_dtype="uint8" if variant == "int8" else "float32",
        conversion_s=round(seconds, 2),
    )


def write_acceptance(folder: Path, images: np.ndarray, probs: np.ndarray) -> AcceptanceFile:
    """The acceptance set a device checks an update with: held-out images the float model is sure of
    (those whose top-1 leads the runner-up the most, so a sound engine cannot flip them), with its
    probabilities."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    order = np.argsort(top2[:, 0] - top2[:, 1])[:ACCEPTANCE_IMAGES]  # the widest margins first
    path = folder / ACCEPTANCE_FILE
    with path.open("wb") as fh:
        np.savez_compressed(fh, images=images[order].astype(np.uint8), probs=probs[order].astype(np.float32))
    return AcceptanceFile(file=path.name, sha256=sha256_file(path), size=path.stat().st_size, images=len(order))


def all_variants(options: ExportOptions) -> list[str]:
    """The variants asked for, in the bundle's order."""
    return list(options.variants) + (list(ONNX_VARIANTS) if options.onnx else [])


def export_bundle(model: str | Path, out: str | Path, options: ExportOptions) -> int:
    """Write the bundle; return 0, or 1 when a variant missed its gate (and was not kept)."""
    unknown = [v for v in options.variants if v not in TFLITE_VARIANTS]
    if unknown:
        raise SmartbinError(f"--variants: unknown {', '.join(unknown)} (allowed: {', '.join(TFLITE_VARIANTS)})")
    out = Path(out)
    check_out(out, options.force)
    source = load_source(model, options.data, options.name)
    variants = all_variants(options) if options.jobs > 1 else []
    background = BackgroundConversions(variants, source.model_file.stat().st_size)
    try:
        return _export(source, background, out, options)
    finally:
        background.close()


def _export(source: Source, background: BackgroundConversions, out: Path, options: ExportOptions) -> int:
    keras_model = load_model(source.model_file)
    if int(keras_model.output_shape[-1]) != len(source.labels):
        raise SmartbinError(
            f"{source.model_file}: {keras_model.output_shape[-1]} outputs but {len(source.labels)} labels"
        )
    # staged beside --out (the same file system, so the finished bundle is renamed into place whole);
    # `--out models/r1` makes models/ as `train --out runs/r1` makes runs/
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        with one_load_per_saved_model():
            export = Export(source, keras_model, options, staging, background)
            # what this process converts first, while the second process converts the others
            for variant in sorted(export.variants, key=background.order):
                export.variant(variant)
            return export.finish(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Export:
    """One conversion in a staging folder: the images it gates on, the manifest it fills, each variant."""

    def __init__(
        self, source: Source, keras_model, options: ExportOptions, staging: Path, background: BackgroundConversions
    ):
        self.keras_model, self.options, self.staging = keras_model, options, staging
        self.console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
        self.size = height, width = int(keras_model.input_shape[1]), int(keras_model.input_shape[2])
        with self.console.status("loading calibration and held-out images"):
            samples = calibration_samples(source.train, options.calib_samples, options.seed)
            self.calibration = load_images(samples, height, width)
            self.held_out = load_images(source.held_out, height, width)
            self.truth = np.array([s.label for s in source.held_out])
            picked = {s.path for s in samples}
            spare = calibration_samples(source.train, len(source.train), options.seed + 1)
            spare = [s for s in spare if s.path not in picked][: max(0, options.gate_images - len(self.held_out))]
            spare_images = load_images(spare, height, width) if spare else self.held_out[:0]
            self.images, self.labels = gate_images(
                (self.held_out, self.truth),
                (spare_images, np.array([s.label for s in spare], dtype=self.truth.dtype)),
                options.gate_images,
                options.seed,
            )
        # Keras' outputs on them, in a thread while the SavedModel is traced (TensorFlow's kernels let go of
        # the GIL): the second core is otherwise idle until the second process has a SavedModel to convert
        reference = ThreadPoolExecutor(1, thread_name_prefix="keras-reference")
        self._keras_probs = reference.submit(predict, keras_model, self.images)
        reference.shutdown(wait=False)
        # what is converted: the same function with the head's BatchNorms folded (convert/quantization/batchnorm.py)
        self.folded, folded = fold_batchnorm(keras_model)
        log.info("%d BatchNorm layer(s) folded into the Dense layers around them", folded)
        head = None
        if options.split_head:
            self.folded, head = split_head(self.folded)
        self.variants = all_variants(options)
        self.saved_model: Path | None = None
        self.background = background
        background.submit(self._saved_model(), self.calibration, staging)
        self.recipe = onnx_recipe(options.onnx_target)
        if options.probes:
            background.submit_probes(staging, options.onnx, self.recipe)
        self.manifest = Manifest(
            format_version=FORMAT_VERSION,
            name=source.name,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            versions=_versions(),
            labels=[LabelEntry(index=lab.index, name=lab.name, bin=lab.bin) for lab in source.labels],
            input=InputSpec(height=height, width=width),
            variants={},
            head=write_head(head, staging) if head is not None else None,
        )
        self.reports: dict[str, dict] = {}

    @property
    def keras_probs(self) -> np.ndarray:
        """Keras' probabilities on the gate's images (waits for them the first time)."""
        if not self._keras_probs.done():
            with self.console.status("running the Keras model on the gate's images"):
                self._keras_probs.result()
        return self._keras_probs.result()

    def _convert(self, variant: str, path: Path) -> float:
        """Write the variant's file; the seconds it took."""
        with self.console.status(f"converting {variant}"):
            start = time.perf_counter()
            seconds = self.background.result(variant)
            if seconds is not None:
                return seconds
            if variant == "onnx":
                convert_onnx(self._float32_tflite(), path)
            elif variant == "onnx_int8":
                cache = self.staging / CALIBRATION_CACHE
                cache.mkdir(exist_ok=True)
                quantize_onnx(
                    self.staging / VARIANT_FILES["onnx"], path, self.calibration, recipe=self.recipe, cache=cache
                )
            else:
                path.write_bytes(convert_tflite(self._saved_model(), variant, self.calibration))
            return time.perf_counter() - start

    def _saved_model(self) -> Path:
        """The one traced SavedModel every TFLite file converts from."""
        self.saved_model = self.saved_model or export_saved_model(self.folded, self.staging / "saved_model")
        return self.saved_model

    def _float32_tflite(self) -> Path:
        """The float32 TFLite file ONNX converts from: the variant's, or one of its own when float32 is not asked
        for (removed with the staging files)."""
        path = self.staging / VARIANT_FILES["float32"]
        if not path.is_file():
            saved_model = self._saved_model()
            path = saved_model / "for-onnx.tflite"
            path.write_bytes(convert_tflite(saved_model, "float32", self.calibration))
        return path

    def _evaluate(
        self, variant: str, path: Path, seconds: float, data: bytes | None = None
    ) -> tuple[GateResult, float]:
        """Gate the variant's file (``data`` written first) through the device's own engine; (gate, ms/image)."""
        if data is not None:
            path.write_bytes(data)
        self.manifest.variants[variant] = entry = _entry(path, variant, seconds)
        engine = open_engine(Bundle(self.staging, self.manifest), "auto", variant)
        # the float variants are the same arithmetic (≥ 99.9 % on the held-out images says so); the
        # quantized ones are measured on the whole agreement set
        count = len(self.images) if BY_NAME[variant].quantized else len(self.held_out)
        start = time.perf_counter()
        probs = np.concatenate([engine.infer(x[None]) for x in self.images[:count]])
        ms = 1000 * (time.perf_counter() - start) / count
        if variant == "int8":  # mixed precision may leave the output in float
            interpreter = getattr(engine, "backbone", engine).interpreter
            entry.output_dtype = np.dtype(interpreter.get_output_details()[0]["dtype"]).name
        entry.gate = gate(
            variant, probs, self.keras_probs[:count], self.labels[:count], len(self.truth), self.options.min_confidence
        )
        return entry.gate, ms

    def variant(self, variant: str) -> None:
        """Convert, gate and (for a quantized variant that misses, or on request) rescue one variant."""
        path = self.staging / VARIANT_FILES[variant]
        seconds = self._convert(variant, path)
        evaluate = functools.partial(self._evaluate, variant, path, seconds)
        result, ms = evaluate()
        recipe = self.recipe if variant == "onnx_int8" else None
        if BY_NAME[variant].quantized and (not result.passed or self.options.quant_report):
            with self.console.status(
                f"{variant}: per-layer quantization report" + ("" if result.passed else ", fixes")
            ):
                what = f"MinMax calibration, {len(self.calibration)} images"
                what = "every hybrid op quantized" if variant == "dynamic" else what
                best, report = rescue(
                    variant,
                    Candidate(path.read_bytes(), result, ms, what, recipe),
                    evaluate,
                    self.calibration,
                    self.saved_model,
                    self.staging / VARIANT_FILES["onnx"] if variant == "onnx_int8" else None,
                    self.options.mixed_precision,
                    self.staging,
                )
                result, _ = evaluate(best.data)
                recipe = best.recipe
                self.manifest.variants[variant].quantization = report
                self.reports[variant] = report.model_dump()
        if recipe is not None:
            self.manifest.variants[variant].recipe = recipe.describe()
        q = self.manifest.variants[variant].quantization
        floats = f", {len(q.float_layers)} layer(s) left in float" if q and q.float_layers else ""
        if q and q.quantized_ops and len(q.float_layers) > MOSTLY_FLOAT * q.quantized_ops:
            kinds = ", ".join(f"{kind} x{count}" for kind, count in q.float_op_types.items())
            self.console.print(
                f"[bold yellow]{variant} is mostly float: {len(q.float_layers)} of its {q.quantized_ops} operations "
                f"({kinds}) were kept in float to pass its gate; expect little of int8's speed (quantization.md "
                "names them)"
            )
        self.console.log(
            f"{variant}: {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB, "
            f"agreement {result.agreement:.1%}, top-1 {result.top1:.1%}{floats}"
        )

    def finish(self, out: Path) -> int:
        """The acceptance set, probes and manifest, then the staging folder renamed to ``out``; 1 (nothing
        written) when a variant missed its gate without --allow-accuracy-drop."""
        manifest, options, console, staging = self.manifest, self.options, self.console, self.staging
        keras_top1 = float((self.keras_probs[: len(self.truth)].argmax(1) == self.truth).mean())
        manifest.keras_accuracy = {"top1": keras_top1, "images": len(self.truth)}
        manifest.acceptance = write_acceptance(staging, self.held_out, self.keras_probs[: len(self.held_out)])
        if options.probes:
            with console.status("writing the peak probes (matrix products only, for the bench's floor)"):
                manifest.probes = self.background.probe_files() or write_probes(staging, options.onnx, self.recipe)
        manifest.variants = {v: manifest.variants[v] for v in self.variants}  # in the order asked for
        failed = [v for v, e in manifest.variants.items() if e.gate and not e.gate.passed]
        for variant in failed:
            manifest.variants[variant].gate.accepted_despite_failure = options.allow_accuracy_drop
        console.print(
            summary_table(list(manifest.variants.items()), f"bundle {out} ({len(self.truth)} held-out images)")
        )
        if failed and not options.allow_accuracy_drop:
            for variant in failed:
                console.print(f"[red]{variant} missed its gate: {describe_failure(manifest.variants[variant].gate)}")
                if self.reports.get(variant):
                    console.print(quantization_markdown({variant: self.reports[variant]}))
            console.print("nothing written; pass --allow-accuracy-drop to write it anyway (marked in the manifest)")
            return 1
        if self.saved_model:
            shutil.rmtree(self.saved_model)
        shutil.rmtree(staging / CALIBRATION_CACHE, ignore_errors=True)
        if self.reports:
            (staging / "quantization.json").write_text(json.dumps(self.reports, indent=2), encoding="utf-8")
            (staging / "quantization.md").write_text(quantization_markdown(self.reports), encoding="utf-8")
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        if options.onnx:
            console.print(
                "On a Jetson, build a TensorRT engine with: "
                + TRTEXEC_HINT.format(onnx=out / "model.onnx", engine=out / "model.engine")
            )
        return 0
