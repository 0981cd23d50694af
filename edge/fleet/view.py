"""What a fleet says about itself on the broker, read by one subscriber: every bin's retained status and
model, and, from the moment it subscribes, its classifications, decisions and command answers.

A rollout (rollout.py) chooses its bins from here and judges them by it; nothing is asked of a bin but
what it publishes anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.wire.mqtt_client import start_subscriber
from edge.wire.payloads import Classification, CommandResult, Decision, ModelInfo, Status
from edge.wire.topics import Topic, device_topic, every_bin, topic_of

log = logging.getLogger(__name__)


@dataclass
class Figures:
    """How sure a group of bins was over a time: its classified frames and its decisions."""

    frames: int
    mean_confidence: float | None
    decisions: int
    low_confidence_share: float | None

    def line(self) -> str:
        """The figures in a line, for a person."""
        confidence = "—" if self.mean_confidence is None else f"{self.mean_confidence:.3f}"
        share = "—" if self.low_confidence_share is None else f"{self.low_confidence_share:.0%}"
        return f"{self.frames} frames, mean confidence {confidence}; {self.decisions} items, {share} unsure"


@dataclass(frozen=True)
class Totals:
    """A bin's running totals since the view began: what a time's figures are the difference of (constant
    memory however long a rollout watches, however many bins)."""

    frames: int = 0
    confidence: float = 0.0  # summed over the frames
    decisions: int = 0
    unsure: int = 0  # decisions too unsure to sort (reason low_confidence)


@dataclass
class BinView:
    """One bin as the broker shows it."""

    device_id: str
    status: Status | None = None
    model: ModelInfo | None = None
    totals: Totals = Totals()
    answers: dict[str, list[CommandResult]] = field(default_factory=dict)

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.state == "online"


class FleetView:
    """One MQTT subscriber on every bin's topics under a prefix; thread-safe reads of what it heard."""

    def __init__(self, config: MqttConfig, client_id: str = "smartbin-fleet"):
        self.config, self.prefix = config, config.topic_prefix
        self.lock = threading.Lock()
        self.bins: dict[str, BinView] = {}
        self.heard = time.monotonic()  # the last retained status or model: the fleet is known once it is quiet
        self.client_id = f"{client_id}-{int(time.time() * 1000) % 10**9}"
        self.client: mqtt.Client | None = None

    def start(self, timeout: float = 10.0) -> FleetView:
        """Connect and subscribe; SmartbinError when the broker cannot be reached or does not grant it in time."""
        where = f"{self.config.host}:{self.config.port}"
        topics = (Topic.STATUS, Topic.MODEL, Topic.CLASSIFICATION, Topic.DECISION, Topic.COMMAND_RESULT)
        try:
            self.client, subscribed = start_subscriber(
                self.config, self.client_id, [(every_bin(self.prefix, t), 1) for t in topics], self._on_message
            )
        except OSError as exc:
            raise SmartbinError(f"cannot reach the broker {where}: {exc}") from None
        if not subscribed.wait(timeout):
            self.close()
            raise SmartbinError(f"the broker {where} did not grant the subscription in {timeout:.0f} s")
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def settle(self, quiet_s: float = 1.0, limit_s: float = 10.0) -> None:
        """Wait until the retained statuses and models have arrived (none new for ``quiet_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and time.monotonic() - self.heard < quiet_s:
            time.sleep(0.05)

    def command(self, device_id: str, payload: str) -> None:
        """Send a command to one bin (QoS 1)."""
        self.client.publish(device_topic(self.prefix, device_id, Topic.COMMAND), payload, qos=1)

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> dict[str, BinView]:
        """Every bin heard of, by device id (the views themselves: read them, do not change them)."""
        with self.lock:
            return dict(self.bins)

    def answers(self, device_id: str, command_id: str) -> list[CommandResult]:
        with self.lock:
            view = self.bins.get(device_id)
            return list(view.answers.get(command_id, [])) if view else []

    def mark(self) -> dict[str, Totals]:
        """Every bin's totals now: ``figures`` counts from here."""
        with self.lock:
            return {device_id: view.totals for device_id, view in self.bins.items()}

    def figures(self, device_ids: list[str], since: dict[str, Totals]) -> Figures:
        """The group's frames and items since the ``mark()`` ``since``."""
        with self.lock:
            now = [(self.bins[d].totals, since.get(d, Totals())) for d in device_ids if d in self.bins]
        frames = sum(n.frames - b.frames for n, b in now)
        decisions = sum(n.decisions - b.decisions for n, b in now)
        return Figures(
            frames=frames,
            mean_confidence=sum(n.confidence - b.confidence for n, b in now) / frames if frames else None,
            decisions=decisions,
            low_confidence_share=sum(n.unsure - b.unsure for n, b in now) / decisions if decisions else None,
        )

    # ------------------------------------------------------------------ paho's thread
    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        kind = topic_of(message.topic)
        rest = message.topic[len(self.prefix) + 1 :] if message.topic.startswith(self.prefix + "/") else ""
        device_id = rest.split("/", 1)[0]
        if kind is None or not device_id or not message.payload:
            return
        now = time.monotonic()
        try:
            with self.lock:
                view = self.bins.setdefault(device_id, BinView(device_id))
                if kind is Topic.STATUS:
                    view.status, self.heard = Status.model_validate_json(message.payload), now
                elif kind is Topic.MODEL:
                    view.model, self.heard = ModelInfo.model_validate_json(message.payload), now
                elif kind is Topic.CLASSIFICATION:
                    confidence = Classification.model_validate_json(message.payload).confidence
                    t = view.totals
                    view.totals = replace(t, frames=t.frames + 1, confidence=t.confidence + confidence)
                elif kind is Topic.DECISION:
                    unsure = Decision.model_validate_json(message.payload).reason == "low_confidence"
                    t = view.totals
                    view.totals = replace(t, decisions=t.decisions + 1, unsure=t.unsure + unsure)
                elif kind is Topic.COMMAND_RESULT:
                    answer = CommandResult.model_validate_json(message.payload)
                    view.answers.setdefault(str(answer.id), []).append(answer)
        except ValidationError as exc:  # another version's message, or not ours: the rest still count
            log.debug("%s: not read (%s)", message.topic, exc.errors()[0]["msg"])
