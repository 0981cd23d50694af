"""A bundle in two parts as one engine: the backbone variant (features out) in its runtime, then the bundle's
head in numpy (edge/formats/head.py). To everything above it, an engine of class probabilities; its head can be
replaced while it serves, the backbone (and a TensorRT engine built for it) untouched."""

from __future__ import annotations

import threading

import numpy as np

from edge.formats.head import Head
from edge.runtime.base import Engine


class HeadedEngine(Engine):
    """``backbone`` (an engine whose output is the pooled features) followed by ``head``."""

    def __init__(self, backbone: Engine, head: Head, shared: threading.Lock | None = None):  # noqa: D107
        # no super().__init__: the backbone's figures are this engine's
        self.backbone, self.head = backbone, head
        # one lock per backbone: a head update's acceptance test runs it in its own thread while the loop does
        self.shared = shared or threading.Lock()
        self.reused = shared is not None  # on a backbone another engine loaded (a head update)
        self.backend = backbone.backend
        self.path, self.threads = backbone.path, backbone.threads
        self.requested_delegate, self.delegate = backbone.requested_delegate, backbone.delegate
        self.delegate_nodes, self.variant = backbone.delegate_nodes, backbone.variant
        self.input_shape, self.input_dtype = backbone.input_shape, getattr(backbone, "input_dtype", np.uint8)
        self.num_classes = head.classes
        self.features: np.ndarray | None = None  # the last batch's features (kept beside a sample)
        self._lock = threading.Lock()  # a head replaced between a batch's features and its probabilities: never

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self.shared:
            features = self.backbone.infer(batch)
        with self._lock:
            self.features = features
            return self.head.apply(features)

    def with_head(self, head: Head) -> HeadedEngine:
        """Another engine on the same backbone (nothing loaded or built), with ``head``."""
        return HeadedEngine(self.backbone, head, self.shared)

    def replace_head(self, head: Head) -> None:
        """Another head from the next frame on (same features width: checked by its bundle)."""
        with self._lock:
            self.head = head
            self.num_classes = head.classes

    def flops(self) -> int | None:
        backbone = self.backbone.flops()
        return None if backbone is None else backbone + self.head.flops()

    def info(self) -> dict:
        return {**self.backbone.info(), "head": {"features": self.head.features, "classes": self.head.classes}}
