"""The networks `smartbin train` builds, by name (no TensorFlow here: the CLI lists them)."""

from __future__ import annotations

BACKBONES: tuple[str, ...] = ("resnet50", "resnet101", "resnet152", "resnet-mini")
DEFAULT_BACKBONE = "resnet50"
SMALL_BACKBONE = "resnet-mini"  # conv1 and one basic block per stage: boards too small for ResNet50, the demo
