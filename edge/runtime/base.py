"""The Engine interface: load a model file, ``infer`` a batch of uint8 images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

NO_DELEGATE = "none"  # plain CPU kernels: no XNNPACK (like benchmark_model --use_xnnpack=false), ONNX on CPU


class Engine(ABC):
    """One loaded model. ``infer`` takes (N, H, W, 3) uint8 and returns (N, classes) float32 probabilities."""

    backend: str = ""

    def __init__(self, path: Path, threads: int, delegate: str | None = None):
        self.path = path
        self.threads = threads
        self.requested_delegate = delegate
        self.delegate: str | None = None  # what really runs, not what was asked for
        # {"delegate", "delegated", "total"}: how many of the model's operations the delegate took
        self.delegate_nodes: dict | None = None
        self.variant: str = ""
        self.input_shape: tuple[int, ...] = ()
        self.num_classes: int = 0

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a batch of RGB uint8 images."""

    def flops(self) -> int | None:
        """Arithmetic of one inference (2 x multiply-adds), where the backend can count it."""
        return None

    def describe(self) -> str:
        nodes = self.delegate_nodes
        taken = f" ({nodes['delegated']}/{nodes['total']} ops)" if nodes and self.delegate else ""
        return f"threads={self.threads}, delegate={self.delegate or 'none'}{taken}"

    def info(self) -> dict:
        """What status messages and the benchmark report about this engine."""
        return {
            "backend": self.backend,
            "variant": self.variant,
            "file": self.path.name,
            "threads": self.threads,
            "delegate": self.delegate,
            "requested_delegate": self.requested_delegate,
            "delegate_nodes": self.delegate_nodes,
        }
