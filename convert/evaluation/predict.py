"""`smartbin predict`: classify images with a run folder, a .keras file or a bundle."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import SmartbinError
from edge.formats.bundle import is_bundle
from edge.formats.images import read_image
from edge.formats.labels import Label
from edge.vision.preprocess import tta_crops

log = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    tta: int = 1
    top_k: int = 3
    backend: str = "auto"
    variant: str | None = None
    threads: int | None = None
    seed: int = 0


class KerasPredictor:
    """A trained Keras model with its labels (workstation side; imports TensorFlow)."""

    def __init__(self, model_path: Path):
        from convert.training.model import load_model
        from convert.training.train import LABELS_FILE, find_run, load_labels
        from edge.formats.labels import load_rules
        from edge.system.paths import default_rules_path

        run_dir, file = find_run(model_path, "a run folder, a .keras file or a bundle")
        self.model = load_model(file)
        labels_path = run_dir / LABELS_FILE
        self.labels: list[Label] = (
            load_labels(labels_path) if labels_path.is_file() else load_rules(default_rules_path())
        )
        self.size = int(self.model.input_shape[1])
        if int(self.model.output_shape[-1]) != len(self.labels):
            raise SmartbinError(f"{file}: model has {self.model.output_shape[-1]} outputs, {len(self.labels)} labels")

    def probs(self, crops: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(crops, training=False))


class BundlePredictor:
    """A verified bundle, run through the device engine."""

    def __init__(self, path: Path, options: PredictOptions):
        from edge.classifier import Classifier

        self.classifier = Classifier(path, options.backend, options.variant, options.threads, k=options.top_k)
        self.labels = self.classifier.labels
        self.size = self.classifier.height

    def probs(self, crops: np.ndarray) -> np.ndarray:
        return np.concatenate([self.classifier.predict_probs(c[None]) for c in crops])


def open_predictor(model: str | Path, options: PredictOptions) -> KerasPredictor | BundlePredictor:
    path = Path(model)
    if not path.exists():
        raise SmartbinError(f"{path}: no such model, run folder or bundle")
    return BundlePredictor(path, options) if is_bundle(path) else KerasPredictor(path)


def predict_one(predictor, source: str, options: PredictOptions) -> dict:
    """Classify one image (averaging ``options.tta`` crops). Raises ImageError naming the image."""
    image = read_image(source)
    rng = np.random.default_rng(options.seed)
    crops = tta_crops(image, predictor.size, max(1, options.tta), rng)
    probs = predictor.probs(crops).mean(axis=0)
    order = np.argsort(-probs)[: min(options.top_k, len(predictor.labels))]
    best = predictor.labels[order[0]]
    return {
        "image": source,
        "label": best.name,
        "label_index": best.index,
        "bin": best.bin,
        "confidence": float(probs[order[0]]),
        "top_k": [
            {"label": predictor.labels[i].name, "bin": predictor.labels[i].bin, "confidence": float(probs[i])}
            for i in order
        ],
    }


def format_result(result: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(result, ensure_ascii=False)
    return f"{result['image']}: {result['label']} -> {result['bin']} ({result['confidence']:.1%})"
