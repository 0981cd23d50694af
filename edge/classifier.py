"""The plain Python API: ``Classifier(bundle).classify(frame)`` -> top-k, bin, per-stage latency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.formats.bundle import Bundle
from edge.formats.labels import Label
from edge.runtime import open_engine
from edge.runtime.base import Engine
from edge.vision.preprocess import Roi, prepare


@dataclass
class Prediction:
    """One classified image."""

    label: Label
    confidence: float
    top_k: list[tuple[Label, float]]
    latency_ms: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = None  # a bundle in two parts: the backbone's output the head read (kept with samples)

    @property
    def bin(self) -> str:
        return self.label.bin

    def to_dict(self) -> dict:
        return {
            "label": self.label.name,
            "label_index": self.label.index,
            "bin": self.label.bin,
            "confidence": round(self.confidence, 4),
            "top_k": [
                {"label": lab.name, "label_index": lab.index, "bin": lab.bin, "confidence": round(p, 4)}
                for lab, p in self.top_k
            ],
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }


def top_k(probs: np.ndarray, labels: list[Label], k: int) -> list[tuple[Label, float]]:
    order = np.argsort(-probs)[:k]
    return [(labels[i], float(probs[i])) for i in order]


class Classifier:
    """Loads a verified bundle variant and classifies RGB frames of any size."""

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        variant: str | None = None,
        threads: int | None = None,
        delegate: str | None = None,
        roi: Roi | None = None,
        k: int = 3,
        engine: Engine | None = None,
    ):
        """``engine``: one made already for this bundle (a head update's, on the serving backbone)."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.engine = engine or open_engine(self.bundle, backend, variant, threads, delegate)
        self.labels = self.bundle.labels
        spec = self.bundle.manifest.input
        self.height, self.width = spec.height, spec.width
        self.roi = roi
        self.k = min(k, len(self.labels))

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return prepare(frame, self.height, self.width, self.roi)

    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for already-prepared (N, H, W, 3) uint8 images."""
        return self.engine.infer(images)

    def classify(self, frame: np.ndarray) -> Prediction:
        """Classify one RGB uint8 frame; latency is split into preprocess, infer and postprocess."""
        t0 = time.perf_counter()
        x = self.prepare(frame)[None]
        t1 = time.perf_counter()
        probs = self.engine.infer(x)[0]
        t2 = time.perf_counter()
        prediction = self.from_probs(probs)
        features = getattr(self.engine, "features", None)
        prediction.features = None if features is None else features[0]
        t3 = time.perf_counter()
        prediction.latency_ms = {
            "preprocess": (t1 - t0) * 1e3,
            "infer": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return prediction

    def from_probs(self, probs: np.ndarray) -> Prediction:
        best = top_k(probs, self.labels, self.k)
        return Prediction(best[0][0], best[0][1], best)


def reference_agreement(engine, acceptance: tuple[np.ndarray, np.ndarray]) -> int:
    """How many of a bundle's acceptance images (``Bundle.acceptance()``) get the float model's top-1 on
    ``engine``: an update's acceptance test and the variant pick both want all of them."""
    images, probs = acceptance
    got = np.concatenate([np.asarray(engine.infer(image[None])).reshape(1, -1) for image in images])
    return int((got.argmax(1) == probs.argmax(1)).sum())
