"""What a SIGHUP may change while the bin runs, and what needs a restart.

A reload compares the running config with the file, section by section. Sections the daemon can
rebuild live are rebuilt; a change to a section that cannot change live refuses the whole reload,
naming it, and the bin keeps running exactly as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.classifier import Classifier
from edge.config import Config, load_config
from edge.errors import SmartbinError
from edge.service.build import load_classifier, make_capture, make_presence
from edge.vision.decision import Decider

if TYPE_CHECKING:
    from edge.service.daemon import Daemon
    from edge.service.web import WebServer

log = logging.getLogger(__name__)

# Rebuilt in this order: what can fail (model, mqtt, web) is prepared before anything is switched.
LIVE = ("model", "source", "presence", "decision", "mqtt", "web", "log_level")
# Read by another service, not by the daemon: a change there is theirs to apply.
NOT_OURS = {"actuator": "smartbin-actuator reads it: restart that service"}
# Changing these while running would strand state that belongs to the old value.
FIXED = {
    "device_id": "the bin's topics, retained status and Last Will are named after it",
    "outbox": "the backlog of unsent decisions lives in the outbox file",
}


class ReloadRefused(Exception):
    """The new config changes something that cannot change while running."""


def changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections whose values differ, in the order of ``Config``'s fields."""
    return [name for name in Config.model_fields if getattr(old, name) != getattr(new, name)]


def plan_reload(old: Config, new: Config) -> list[str]:
    """The live sections to rebuild (in order). Raises ReloadRefused naming a section that cannot change."""
    changed = changed_sections(old, new)
    fixed = [name for name in changed if name in FIXED]
    if fixed:
        reasons = "; ".join(f"{name}: {FIXED[name]}" for name in fixed)
        raise ReloadRefused(f"{', '.join(fixed)} cannot change while running ({reasons}); restart the service")
    return [name for name in LIVE if name in changed]


@dataclass
class PreparedReload:
    """A reload read and planned, its new model (if any) loaded: ready for ``apply_reload``."""

    config: Config
    sections: list[str]
    classifier: Classifier | None


def prepare_reload(running: Config, config_path: Path) -> PreparedReload:
    """Beside the loop: read the file, plan the reload, load a changed model (the slow part). Raises
    SmartbinError or ReloadRefused, and then nothing has changed."""
    new = load_config(config_path)
    sections = plan_reload(running, new)
    return PreparedReload(new, sections, load_classifier(new) if "model" in sections else None)


def apply_reload(daemon: Daemon, prepared: PreparedReload, config_path: Path) -> None:
    """On the loop: rebuild each changed section, or refuse the whole reload and keep running."""
    new, sections, classifier = prepared.config, prepared.sections, prepared.classifier
    try:
        # Prepare what can still fail before anything is switched: a refused reload changes nothing.
        publisher = daemon.make_publisher(new) if "mqtt" in sections else None
        web = swap_web(daemon, new) if "web" in sections else daemon.web
    except SmartbinError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    for name in changed_sections(daemon.config, new):
        if name in NOT_OURS:
            log.info("%s changed: %s", name, NOT_OURS[name])
    daemon.config = new
    if "source" in sections:
        daemon.capture.stop()
        daemon.capture = make_capture(new)
        daemon.capture.start()
        daemon.last_id = -1  # a new source numbers its frames from 1
        daemon.classifier.roi = new.source.roi.to_roi() if new.source.roi else None
    if "presence" in sections:
        daemon.presence = make_presence(new)
    if classifier is not None:
        classifier.roi = daemon.classifier.roi
        daemon.classifier = classifier
    if classifier is not None or "decision" in sections:
        decision = new.decision.model_copy() if "decision" in sections else daemon.decider.config
        daemon.decider = Decider(daemon.classifier.labels, decision)
    if publisher is not None:
        daemon.publisher.stop(timeout=3.0)  # offline on the old topics, backlog kept in the outbox
        daemon.publisher = publisher
        daemon.publisher.start()
    if web is not daemon.web and daemon.web is not None:
        daemon.web.stop()
    daemon.web = web
    if web is not None and web.thread.ident is None:
        web.start()
    if web is not None:
        web.roi = daemon.classifier.roi
    logging.getLogger().setLevel(new.log_level)
    daemon.publisher.publish_status()
    log.info("reloaded from %s: %s", config_path, ", ".join(sections) or "nothing changed")


def swap_web(daemon: Daemon, new: Config) -> WebServer | None:
    """The new page's server, bound before the old one goes; on the same address the old one is
    released first and, if the new one cannot bind, taken back."""
    same_address = daemon.web is not None and (daemon.web.config.host, daemon.web.config.port) == (
        new.web.host,
        new.web.port,
    )
    if same_address:
        daemon.web.stop()
    try:
        return daemon.make_web(new)
    except OSError as exc:
        if same_address:
            daemon.web = daemon.make_web(daemon.config)
            daemon.web.start()
        raise SmartbinError(f"web: cannot listen on {new.web.host}:{new.web.port}: {exc}") from exc
