"""A frozen backbone's features computed once: the head phase trains on vectors, not images.

With the backbone frozen only the head learns, yet every epoch would run the backbone over every image
again. ``FeatureCache`` keeps the pooled features of each image for each augmentation pass on disk,
keyed by the image's sha256 and the pass's seed, under a folder named after the backbone's weights and
the input size (another backbone never reads them); a second run, or a run on a grown dataset,
computes only what is new. ``head_model`` is the model's head on its own, sharing its layers, so what
it learns is the whole model's.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import keras
import numpy as np

from convert.training.inputs import keyed_dataset
from edge.formats.bundle import sha256_file
from edge.formats.dataset import LabelledImage
from edge.system.atomic import atomic_output

log = logging.getLogger(__name__)

POOLING = "avg_pooling"  # the layer whose output the head reads (convert/training/model.py)


def feature_model(model: keras.Model) -> keras.Model:
    """uint8 images -> the pooled backbone features the head reads."""
    return keras.Model(model.inputs, model.get_layer(POOLING).output, name="features")


def head_model(model: keras.Model) -> keras.Model:
    """The layers after the pooling as a model of their own, sharing the whole model's weights."""
    after = model.layers[[layer.name for layer in model.layers].index(POOLING) + 1 :]
    x = inputs = keras.Input((int(model.get_layer(POOLING).output.shape[-1]),), name="features")
    for layer in after:
        x = layer(x)
    return keras.Model(inputs, x, name="head")


def _key(digest: str) -> int:
    return int(digest[:15], 16)  # fits an int64: each image's own augmentation seed


class FeatureCache:
    """Pooled features per (image, augmentation pass) in ``folder``, computed when missing."""

    def __init__(self, folder: str | Path, model: keras.Model, img_size: int, batch_size: int, seed: int = 0):
        self.extractor = feature_model(model)
        weights = hashlib.sha256()
        for array in self.extractor.get_weights():
            weights.update(np.ascontiguousarray(array).tobytes())
        backbone = next(layer.name for layer in self.extractor.layers if isinstance(layer, keras.Model))
        self.folder = Path(folder) / f"{backbone}-{img_size}px-{weights.hexdigest()[:12]}"
        self.img_size, self.batch_size, self.seed = img_size, batch_size, seed
        self.computed = self.reused = 0
        self._digests: dict[Path, str] = {}

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = sha256_file(path)
        return self._digests[path]

    def features(self, samples: list[LabelledImage], augmentation: int | None) -> np.ndarray:
        """The features of ``samples`` (in order) for augmentation pass ``augmentation`` (None: the
        validation's centre crop)."""
        name = "center" if augmentation is None else f"seed{self.seed}-pass{augmentation}"
        file = self.folder / f"{name}.npz"
        known: dict[str, np.ndarray] = {}
        if file.is_file():
            with np.load(file) as stored:
                known = dict(zip(stored["digests"].tolist(), stored["features"]))
        digests = [self._digest(s.path) for s in samples]
        missing = sorted({d for d in digests if d not in known})
        if missing:
            first = {d: s for d, s in zip(reversed(digests), reversed(samples))}
            paths = [str(first[d].path) for d in missing]
            pass_seed = None if augmentation is None else self.seed * 10_000 + augmentation
            batches = keyed_dataset(paths, [_key(d) for d in missing], self.img_size, self.batch_size, pass_seed)
            vectors = np.asarray(self.extractor.predict(batches, verbose=0))
            known.update(zip(missing, vectors))
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_output(file) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, digests=np.array(list(known)), features=np.stack(list(known.values())))
        self.computed += len(missing)
        self.reused += len(digests) - len(missing)
        return np.stack([known[d] for d in digests])


def embeddings(cache: FeatureCache, samples: list[LabelledImage]) -> np.ndarray:
    """Each image's pooled backbone features (the validation's centre crop), L2-normalised."""
    vectors = cache.features(samples, None).astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def novelty(known: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each candidate's cosine distance to its nearest known image (normalised embeddings): 0 for an image
    the model has seen, larger for what it has not."""
    nearest = np.full(len(candidates), -1.0)
    for start in range(0, len(known), 4096):  # bounded memory for a large training set
        nearest = np.maximum(nearest, (candidates @ known[start : start + 4096].T).max(axis=1))
    return 1.0 - nearest
