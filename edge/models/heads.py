"""A head update (issue 52): a bundle in two parts whose backbone is the serving one's, its head another (a new
item taught). It serves on the backbone already loaded, so nothing is loaded again and no TensorRT engine is
built; the store still keeps it as a whole bundle (its backbone files linked), so a restart or a rollback
loads it as any other."""

from __future__ import annotations

import logging
from pathlib import Path

from edge.classifier import Classifier
from edge.formats.bundle import Bundle
from edge.runtime.headed import HeadedEngine
from edge.wire.model_info import HeadInfo

log = logging.getLogger(__name__)


def on_serving_backbone(folder: Path, serving: Classifier, top_k: int) -> Classifier | None:
    """The bundle in ``folder`` on ``serving``'s backbone when it only changes the head: the serving variant's
    file the same (sha256) and the head taking the same features. None: it needs a load of its own."""
    engine = serving.engine
    bundle = Bundle.open(folder)
    if not isinstance(engine, HeadedEngine) or bundle.manifest.head is None:
        return None
    new, old = bundle.manifest.variants.get(engine.variant), serving.bundle.manifest.variants.get(engine.variant)
    if new is None or old is None or new.sha256 != old.sha256 or new.file != old.file:
        return None
    head = bundle.head()
    if head is None or head.features != engine.head.features:
        return None
    log.info("%s: a new head on the serving backbone (%s), nothing loaded again", folder.name, engine.variant)
    return Classifier(bundle, roi=serving.roi, k=top_k, engine=engine.with_head(head))


def head_info(classifier: Classifier) -> HeadInfo | None:
    """For …/model: the head of a bundle in two parts, and whether it serves on a backbone loaded before it."""
    engine, entry = classifier.engine, classifier.bundle.manifest.head
    if not isinstance(engine, HeadedEngine) or entry is None:
        return None
    return HeadInfo(
        sha256=entry.sha256, classes=engine.head.classes, features=entry.features, shared_backbone=engine.reused
    )
