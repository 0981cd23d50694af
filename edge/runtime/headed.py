"""A bundle in two parts as one engine: the backbone variant (features out) in its runtime, then the bundle's
head in numpy (edge/formats/head.py). To everything above it, an engine of class probabilities; another head is
another engine on the same backbone (``with_head``), which serves in its place, the backbone (and a TensorRT
engine built for it) untouched."""

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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self.shared:
            features = self.backbone.infer(batch)
        self.features = features  # kept for the sample; the head reads this batch's, whatever a caller sets meanwhile
        return self.head.apply(features)

    def with_head(self, head: Head) -> HeadedEngine:
        """Another engine on the same backbone (nothing loaded or built), with ``head``."""
        return HeadedEngine(self.backbone, head, self.shared)

    def flops(self) -> int | None:
        backbone = self.backbone.flops()
        return None if backbone is None else backbone + self.head.flops()

    def info(self) -> dict:
        return {**self.backbone.info(), "head": {"features": self.head.features, "classes": self.head.classes}}
