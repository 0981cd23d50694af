"""How each section of the config becomes a running part: the camera, the presence trigger, the classifier."""

from __future__ import annotations

from pathlib import Path

from edge.classifier import Classifier
from edge.config import Config
from edge.formats.bundle import Bundle
from edge.models.pick import PickStore, machine_key
from edge.sources import Capture, open_source
from edge.vision.decision import PresenceDetector
from edge.vision.preprocess import Roi


def make_capture(config: Config) -> Capture:
    uri = config.source.uri
    return Capture(
        lambda: open_source(uri),
        frozen_after_s=config.source.frozen_after_s,
        backoff_s=(0.5, config.source.reconnect_max_s),
    )


def make_presence(config: Config) -> PresenceDetector | None:
    p = config.presence
    return (
        None
        if p.mode == "always"
        else PresenceDetector(
            p.pixel_threshold,
            p.area_fraction,
            warmup_frames=p.warmup_frames,
            relearn_fraction=p.relearn_fraction,
            max_item_s=p.max_item_s,
        )
    )


def inference_threads(config: Config) -> int | None:
    """The configured thread count; None for ``auto``, which the runtime resolves (``default_threads``)."""
    threads = config.model.threads
    return None if threads == "auto" else threads


def config_roi(config: Config) -> Roi | None:
    """The configured drop zone, if any."""
    return config.source.roi.to_roi() if config.source.roi else None


def load_classifier(config: Config, bundle_path: Path | None = None) -> Classifier:
    """The configured model (or the bundle at ``bundle_path``), verified and loaded. Under ``variant: auto``,
    the variant, backend and threads this device picked for the bundle (edge/models/pick.py), else the default
    until it has picked."""
    m = config.model
    bundle = Bundle.open(bundle_path or m.bundle)
    backend, variant, threads = m.backend, m.variant, inference_threads(config)
    if variant == "auto":
        known = PickStore(config.updates.store).load(machine_key(bundle))
        chosen = known.chosen if known is not None else None
        backend, variant, threads = (
            (chosen.backend, chosen.variant, chosen.threads) if chosen else (backend, None, threads)
        )
    return Classifier(bundle, backend, variant, threads, m.delegate, config_roi(config), m.top_k)
