"""What a SIGHUP may change while the bin runs, and what needs a restart.

A reload compares the running config with the file, section by section. Sections the daemon can
rebuild live are rebuilt; a change to a section that cannot change live refuses the whole reload,
naming it, and the bin keeps running exactly as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.classifier import Classifier
from edge.config import Config, load_config
from edge.daemon.camera import Camera
from edge.daemon.outputs import Outputs
from edge.daemon.pipeline import Pipeline
from edge.errors import SmartbinError
from edge.models.build import config_roi, load_classifier, make_presence
from edge.models.serving import Serving
from edge.web.host import WebHost

log = logging.getLogger(__name__)

# Every section of Config is in exactly one of these (a test holds it): a new section must say how a
# reload treats it.
# Rebuilt in this order: what can fail (model, mqtt, web) is prepared before anything is switched.
LIVE = ("model", "source", "presence", "decision", "mqtt", "updates", "samples", "web", "log_level")
# Read by another service, not by the daemon: a change there is theirs to apply.
NOT_OURS = {"actuator": "smartbin-actuator reads it: reload or restart that service"}
# Changing these while running would strand state that belongs to the old value (dotted: one field).
FIXED = {
    "device_id": "the bin's topics, retained status and Last Will are named after it",
    "outbox": "the backlog of unsent decisions lives in the outbox file",
    "updates.store": "the serving model and the one to roll back to live in the model store",
}
# Applied at the next start, with a warning: nothing is lost meanwhile.
AT_RESTART = {"counters": "today's counts stay in the file open now; the new one is used from the next start"}


def _value(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class ReloadRefused(SmartbinError):
    """The new config changes something that cannot change while running."""


def changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections whose values differ, in the order of ``Config``'s fields."""
    return [name for name in Config.model_fields if getattr(old, name) != getattr(new, name)]


def plan_reload(old: Config, new: Config) -> list[str]:
    """The live sections to rebuild (in order). Raises ReloadRefused naming a section that cannot change."""
    changed = changed_sections(old, new)
    fixed = [name for name in FIXED if _value(old, name) != _value(new, name)]
    if fixed:
        reasons = "; ".join(f"{name}: {FIXED[name]}" for name in fixed)
        raise ReloadRefused(f"{', '.join(fixed)} cannot change while running ({reasons}); restart the service")
    return [name for name in LIVE if name in changed]


@dataclass
class PreparedReload:
    """A reload read and planned, its new model (if any) loaded: ready for ``apply_reload``.
    ``bundle_changed``: ``model.bundle`` names another folder, which now serves instead of the model store's."""

    config: Config
    sections: list[str]
    classifier: Classifier | None
    bundle_changed: bool = False


def prepare_reload(running: Config, config_path: Path, serving: Path) -> PreparedReload:
    """Beside the loop: read the file, plan the reload, load a changed model (the slow part). Raises
    SmartbinError or ReloadRefused, and then nothing has changed.

    ``serving``: the bundle that serves now. A change under ``model:`` other than ``model.bundle`` (a variant,
    threads, top_k) reloads that bundle with the new settings: after an update it is the model store's, and
    going back to the configured folder would leave the store and ``…/model`` naming a model that no longer
    serves. Only a new ``model.bundle`` loads the configured folder."""
    new = load_config(config_path)
    sections = plan_reload(running, new)
    if "model" not in sections:
        return PreparedReload(new, sections, None)
    changed = Path(new.model.bundle) != Path(running.model.bundle)
    return PreparedReload(new, sections, load_classifier(new, None if changed else serving), changed)


class Live(Protocol):
    """The running parts a reload rebuilds (the daemon's)."""

    config: Config
    camera: Camera
    pipeline: Pipeline
    models: Serving
    outputs: Outputs
    web: WebHost

    def publish_status(self) -> None: ...


def apply_reload(live: Live, prepared: PreparedReload, config_path: Path) -> None:
    """On the loop: rebuild each changed section, or refuse the whole reload and keep running."""
    new, sections, classifier = prepared.config, prepared.sections, prepared.classifier
    try:
        # Prepare what can still fail before anything is switched: a refused reload changes nothing.
        publisher = live.outputs.make_publisher(new) if "mqtt" in sections else None
        # the page serves the samples folder too
        web = live.web.prepare(live.config, new) if {"web", "samples"} & set(sections) else live.web.server
    except SmartbinError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    for name in changed_sections(live.config, new):
        if name in NOT_OURS:
            log.info("%s changed: %s", name, NOT_OURS[name])
        if name in AT_RESTART:
            log.warning("%s changed, applied at the next start: %s", name, AT_RESTART[name])
    live.config = live.models.config = live.outputs.config = new
    if "updates" in sections:
        live.models.updates_changed()
    if "samples" in sections:
        live.outputs.replace_samples(new)
    roi = config_roi(new) if "source" in sections else live.models.classifier.roi
    if "source" in sections:
        live.camera.replace(new)
        live.models.classifier.roi = roi
    if "presence" in sections:
        live.pipeline.set_presence(make_presence(new))
    if classifier is not None:
        classifier.roi = roi
        if prepared.bundle_changed:
            live.models.switch_to(classifier, Path(new.model.bundle), "model.bundle changed in " + str(config_path))
        else:
            live.models.serve(classifier)
            live.models.changed()
    if "decision" in sections:
        live.pipeline.set_vote(new.decision.settings())
    if publisher is not None:
        live.outputs.replace_publisher(publisher)
    else:
        live.outputs.publisher.read_tls_again()
    live.web.replace(web, roi)
    logging.getLogger().setLevel(new.log_level)
    live.publish_status()
    log.info("reloaded from %s: %s", config_path, ", ".join(sections) or "nothing changed")
