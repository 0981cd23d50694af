"""A bundle's head on its own (``head.npz``): the dense layers after the backbone's pooled features, with their
BatchNorm folded in, run in numpy on the device. A bundle in two parts (``smartbin convert --split-head``) ships
its variants as backbones that output features, and this head beside them: a new head (a new item taught) is
kilobytes to a few megabytes, and it replaces the old one live, without loading the backbone again or building
its engine again.

The file holds ``w0, b0, w1, b1, …`` (weights ``(in, out)`` as float16, biases as float32) and
``activations`` (one per layer: relu, or softmax for the last); nothing in it is a Python object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import BundleError

HEAD_FILE = "head.npz"
ACTIVATIONS = ("relu", "linear", "softmax")
MAX_LAYERS = 8


@dataclass
class Head:
    """Dense layers: ``features -> probabilities``."""

    weights: list[np.ndarray]  # (in, out) float32
    biases: list[np.ndarray]  # (out,) float32
    activations: list[str]

    @property
    def features(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def classes(self) -> int:
        return int(self.weights[-1].shape[1])

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(N, features) -> (N, classes) float32 probabilities."""
        x = np.asarray(features, np.float32).reshape(len(features), -1)
        for weight, bias, activation in zip(self.weights, self.biases, self.activations):
            # numpy's own loops, not BLAS: OpenBLAS's threads spin after a product and took the cores from the
            # backbone's next run (3.7 -> 8.7 ms a frame here); one thread reads the weights as fast (0.3 ms)
            x = np.einsum("nf,fo->no", x, weight) + bias
            if activation == "relu":
                np.maximum(x, 0.0, out=x)
            elif activation == "softmax":
                x = np.exp(x - x.max(axis=1, keepdims=True))
                x /= x.sum(axis=1, keepdims=True)
        return x

    def flops(self) -> int:
        return 2 * sum(int(w.size) for w in self.weights)

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": w.astype(np.float16) for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b.astype(np.float32) for i, b in enumerate(self.biases)})
        with path.open("wb") as out:
            np.savez(out, activations=np.array(self.activations), **arrays)

    @classmethod
    def load(cls, path: Path) -> Head:
        """The head in ``path``, its layers checked to chain (BundleError naming the file and the check)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                activations = [str(a) for a in data["activations"]]
                layers = len(activations)
                weights = [data[f"w{i}"].astype(np.float32) for i in range(min(layers, MAX_LAYERS))]
                biases = [data[f"b{i}"].astype(np.float32) for i in range(min(layers, MAX_LAYERS))]
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable head: {exc}") from None
        head = cls(weights, biases, activations)
        problem = head.problem(layers)
        if problem:
            raise BundleError(f"{path}: head check failed: {problem}")
        return head

    def problem(self, layers: int) -> str | None:
        """What is wrong with the layers (None: they chain, from features to probabilities)."""
        if not 1 <= layers <= MAX_LAYERS:
            return f"{layers} layers (1 to {MAX_LAYERS})"
        if any(a not in ACTIVATIONS for a in self.activations) or self.activations[-1] != "softmax":
            return f"activations {self.activations} (relu or linear, then softmax last)"
        width = self.weights[0].shape[0] if self.weights[0].ndim == 2 else -1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if weight.ndim != 2 or weight.shape[0] != width or bias.shape != (weight.shape[1],):
                return f"layer {i}: weights {weight.shape} and bias {bias.shape} do not follow a layer of {width}"
            if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
                return f"layer {i}: not finite"
            width = weight.shape[1]
        return None
