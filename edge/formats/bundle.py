"""Model bundles: the variants a converter wrote and the manifest that vouches for them.

The device refuses a bundle whose files do not match the manifest, naming the file and
the check that failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field, ValidationError, model_validator

from edge.errors import BundleError
from edge.formats.head import Head
from edge.formats.jsonfile import read_json
from edge.formats.labels import BINS, Label
from edge.strict import Strict

MANIFEST_FILE = "manifest.json"
ACCEPTANCE_FILE = "acceptance.npz"
FORMAT_VERSION = 1


class LabelEntry(Strict):
    index: int = Field(ge=0)
    name: str
    bin: Literal[BINS]  # type: ignore[valid-type]


class InputSpec(Strict):
    """What the model takes: plain RGB pixels; the normalisation is inside the model."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    dtype: Literal["uint8"] = "uint8"
    color: Literal["RGB"] = "RGB"
    range: tuple[int, int] = (0, 255)
    layout: Literal["NHWC"] = "NHWC"
    preprocessing: str = "inside the model (ResNet caffe: RGB->BGR, minus ImageNet means)"


class GateResult(Strict):
    """One variant beside the Keras model, measured at export (convert/export/gate.py): top-1 on the ``images``
    held-out ones, ``top1_drop`` on all ``agreement_images`` (quantized variants: of the items the bin sorts
    right, at least ``min_confidence`` sure and right); ``agreement`` of the top-1 on the
    ``confident_images`` where either model reaches ``min_confidence`` (float variants: on all)."""

    images: int
    top1: float
    keras_top1: float
    top1_drop: Optional[float] = None
    agreement: float
    overall_agreement: Optional[float] = None
    agreement_images: Optional[int] = None
    confident_images: Optional[int] = None
    min_confidence: Optional[float] = None
    max_prob_diff: float
    min_agreement: float
    max_top1_drop: Optional[float] = None
    passed: bool
    accepted_despite_failure: bool = False


class LayerError(Strict):
    """One layer's quantization error, from the convert-time debugger."""

    name: str
    op: str
    # signal-to-quantization-noise ratio in dB, lower worse: of the layer's worst channel (int8, onnx_int8),
    # or of the model's output with only this layer quantized (dynamic)
    metric: Literal["channel_sqnr_db", "output_sqnr_db"]
    error: float
    range: tuple[float, float]  # the range the quantization covers: activations (dynamic: weights)


class Attempt(Strict):
    what: str  # e.g. "MinMax calibration", "3 layers in float"
    agreement: float
    top1: float
    kept: bool = False


class QuantizationReport(Strict):
    """How an integer variant was made and, where it struggled, why (quantization.md beside the manifest)."""

    calibration: str  # method and number of images
    attempts: list[Attempt] = []
    float_layers: list[str] = []  # mixed precision: the operations that stayed float to pass the gate
    float_op_types: dict[str, int] = {}  # the same, counted by kind of operation (Conv, Add, ...)
    quantized_ops: Optional[int] = None  # the operations of the graph float_layers names (all of them are in it)
    ms_per_image: Optional[float] = None  # with float_layers, measured on the held-out images
    int8_ms_per_image: Optional[float] = None  # the full-integer model, same images, same run
    worst_layers: list[LayerError] = []

    @model_validator(mode="after")
    def _float_part_of_the_model(self) -> QuantizationReport:
        # a count of float operations above the model's own (seen once: "126 of 79") is a wrong report
        if self.quantized_ops is not None and len(set(self.float_layers)) > self.quantized_ops:
            raise ValueError(f"{len(set(self.float_layers))} operations in float of a model of {self.quantized_ops}")
        return self


class VariantFile(Strict):
    file: str
    format: Literal["tflite", "onnx"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    input_dtype: str
    output_dtype: str
    conversion_s: Optional[float] = None
    recipe: Optional[str] = None  # how it was quantized, for which CPU, and why (onnx_int8)
    gate: Optional[GateResult] = None
    quantization: Optional[QuantizationReport] = None


class ProbeFile(Strict):
    """A matrix-products-only model shipped beside the variants: what the inference library reaches
    on plain 1x1 convolutions of this data type, the bench's measured peak."""

    file: str
    format: Literal["tflite", "onnx"]
    dtype: Literal["float32", "int8"]
    gflop: float = Field(gt=0, description="arithmetic of one inference, 2 per multiply-add")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class AcceptanceFile(Strict):
    """Reference images at the model's input size with the float model's probabilities on them: a device
    runs them through its own engine before it switches to this bundle (an over-the-air update)."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    images: int = Field(ge=1)


class HeadFile(Strict):
    """A bundle in two parts: its variants output the backbone's pooled features, and this head (dense layers,
    edge/formats/head.py) turns them into the labels' probabilities on the device; replaceable alone."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    features: int = Field(gt=0, description="the backbone's output width, the head's input")


class Manifest(Strict):
    format_version: int
    name: str
    created: str
    versions: dict[str, str] = {}
    labels: list[LabelEntry]
    input: InputSpec
    variants: dict[str, VariantFile]
    keras_accuracy: dict[str, float] = {}
    probes: dict[str, ProbeFile] = {}  # "<format>_<dtype>", e.g. tflite_int8
    acceptance: Optional[AcceptanceFile] = None
    head: Optional[HeadFile] = None  # set: the variants are backbones, this head makes the probabilities

    def label_list(self) -> list[Label]:
        return [Label(e.index, e.name, e.bin) for e in self.labels]


def parse_manifest(data: object, where: str | Path) -> Manifest:
    """A manifest's parsed JSON, validated; ``where`` (a file or an archive member) names it in errors."""
    if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{where}: format_version {data.get('format_version')!r} is not supported "
            f"(this smartbin reads {FORMAT_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{where}: {loc}: {first['msg']}") from None
    if [e.index for e in manifest.labels] != list(range(len(manifest.labels))):
        raise BundleError(f"{where}: labels must be indexed 0..N-1 in order")
    return manifest


def listed_files(manifest: Manifest) -> dict[str, int]:
    """Every file the manifest vouches for, with its size: variants, probes, the acceptance set."""
    entries = [*manifest.variants.values(), *manifest.probes.values()]
    files = {e.file: e.size for e in entries}
    for extra in (manifest.acceptance, manifest.head):
        if extra is not None:
            files[extra.file] = extra.size
    return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Bundle:
    """An opened bundle folder. ``verify`` checks files against the manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Read and validate manifest.json (files are checked by ``verify``)."""
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not path.is_dir():
            raise BundleError(f"{path}: bundle folder not found")
        missing = f"missing (is {path} a bundle from `smartbin convert`?)"
        manifest = parse_manifest(read_json(manifest_path, BundleError, missing, "not valid JSON"), manifest_path)
        return cls(path, manifest)

    @property
    def labels(self) -> list[Label]:
        return self.manifest.label_list()

    def variant_names(self) -> list[str]:
        return list(self.manifest.variants)

    def verify(self, variants: list[str] | None = None) -> None:
        """Check that each listed file exists with the manifest's size and sha256."""
        for name in variants if variants is not None else self.variant_names():
            self.file(name)
        if variants is None:
            for name in self.manifest.probes:
                self.probe(name)
            if self.manifest.acceptance is not None:
                self.acceptance()
        if self.manifest.head is not None:
            self.head()

    def head(self) -> Head | None:
        """The verified head of a bundle in two parts (None: its variants make the probabilities themselves)."""
        entry = self.manifest.head
        if entry is None:
            return None
        path = self._checked(entry.file, entry.size, entry.sha256)
        head = Head.load(path)
        if (head.features, head.classes) != (entry.features, len(self.manifest.labels)):
            raise BundleError(
                f"{path}: head shape check failed: {head.features} features -> {head.classes} classes, manifest "
                f"says {entry.features} -> {len(self.manifest.labels)} labels"
            )
        return head

    def acceptance(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The verified acceptance set: (uint8 images N x H x W x 3, float probabilities N x classes)."""
        entry = self.manifest.acceptance
        if entry is None:
            return None
        path = self._checked(entry.file, entry.size, entry.sha256)
        try:
            with np.load(path, allow_pickle=False) as data:
                images, probs = data["images"], data["probs"]
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable acceptance set: {exc}") from None
        spec = self.manifest.input
        if images.shape != (entry.images, spec.height, spec.width, 3) or probs.shape != (
            entry.images,
            len(self.manifest.labels),
        ):
            raise BundleError(f"{path}: acceptance set shape check failed: {images.shape}, {probs.shape}")
        return images, probs

    def file(self, variant: str) -> Path:
        """The verified path of one variant's file."""
        entry = self.manifest.variants.get(variant)
        if entry is None:
            raise BundleError(
                f"{self.path / MANIFEST_FILE}: no variant {variant!r} "
                f"(this bundle has: {', '.join(self.variant_names()) or 'none'})"
            )
        return self._checked(entry.file, entry.size, entry.sha256)

    def probe(self, name: str) -> tuple[Path, ProbeFile] | None:
        """The verified path and entry of a peak probe (None when the bundle has none of that name)."""
        entry = self.manifest.probes.get(name)
        return None if entry is None else (self._checked(entry.file, entry.size, entry.sha256), entry)

    def _checked(self, file: str, expected_size: int, expected_sha256: str) -> Path:
        path = self.path / file
        if not path.is_file():
            raise BundleError(f"{path}: missing file listed in the manifest")
        size = path.stat().st_size
        if size != expected_size:
            raise BundleError(f"{path}: size check failed: {size} bytes, manifest says {expected_size}")
        digest = sha256_file(path)
        if digest != expected_sha256:
            raise BundleError(
                f"{path}: sha256 check failed: file is {digest[:12]}…, manifest says {expected_sha256[:12]}…"
            )
        return path

    def check_model_shape(self, variant: str, input_shape: tuple[int, ...], num_outputs: int) -> None:
        """Refuse a model whose input shape or output size contradicts the manifest."""
        spec = self.manifest.input
        path = self.path / self.manifest.variants[variant].file
        if tuple(input_shape[-3:]) != (spec.height, spec.width, spec.channels):
            raise BundleError(
                f"{path}: input shape check failed: model takes {tuple(input_shape)}, "
                f"manifest says (N, {spec.height}, {spec.width}, {spec.channels})"
            )
        head = self.manifest.head
        if head is not None and num_outputs != head.features:
            raise BundleError(
                f"{path}: feature count check failed: the backbone outputs {num_outputs}, "
                f"the head takes {head.features}"
            )
        if head is None and num_outputs != len(self.manifest.labels):
            raise BundleError(
                f"{path}: label count check failed: model outputs {num_outputs} classes, "
                f"manifest lists {len(self.manifest.labels)} labels"
            )


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()
