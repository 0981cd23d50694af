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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from edge.broker.client import start_subscriber
from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.formats.labels import BINS
from edge.wire.fleet import LOCK, RECORD
from edge.wire.payloads import Classification, CommandResult, Decision, ModelInfo, Status
from edge.wire.shadow import ShadowItem
from edge.wire.topics import FLEET, ROLL_CALL, Topic, device_topic, every_bin, fleet_topic, topic_of

log = logging.getLogger(__name__)


@dataclass
class Figures:
    """How sure a group of bins was over a time: its classified frames and its decisions."""

    frames: int
    mean_confidence: float | None
    decisions: int
    low_confidence_share: float | None
    per_bin: dict[str, int] = field(default_factory=dict)  # items sent to each bin
    corrections: int = 0  # corrections the bins accepted (a person said an item was something else)

    def share(self, bin_name: str) -> float | None:
        """The share of the items sent to ``bin_name`` (None without items)."""
        return self.per_bin.get(bin_name, 0) / self.decisions if self.decisions else None

    def line(self) -> str:
        """The figures in a line, for a person."""
        confidence = "—" if self.mean_confidence is None else f"{self.mean_confidence:.3f}"
        share = "—" if self.low_confidence_share is None else f"{self.low_confidence_share:.0%}"
        bins = ", ".join(f"{b} {self.share(b):.0%}" for b in BINS if self.per_bin.get(b)) or "no items"
        return (
            f"{self.frames} frames, mean confidence {confidence}; {self.decisions} items, {share} unsure ({bins}); "
            f"{self.corrections} corrected"
        )


@dataclass
class Flips:
    """What a model in the shadow would have done on a group's items: agreement, and the items it would send
    to another bin, counted by (serving bin, shadow bin) with a few example event_ids each."""

    items: int = 0
    agreed: int = 0
    pairs: dict[str, int] = field(default_factory=dict)  # "kitchen>recyclable" -> items
    examples: dict[str, list[str]] = field(default_factory=dict)  # the same key -> event_ids of kept samples
    expected: int = 0  # items whose change the user said to expect (not counted as flips)

    @property
    def flipped(self) -> int:
        return sum(self.pairs.values())

    def line(self) -> str:
        """The shadow's figures in a line, for a person."""
        pairs = ", ".join(f"{k.replace('>', ' -> ')} {n}" for k, n in sorted(self.pairs.items(), key=lambda p: -p[1]))
        expected = f"; {self.expected} expected changes" if self.expected else ""
        return (
            f"{self.items} items, {self.agreed} to the same bin, {self.flipped} elsewhere ({pairs or 'none'}){expected}"
        )


@dataclass(frozen=True)
class Totals:
    """A bin's running totals since the view began: what a time's figures are the difference of (constant
    memory however long a rollout watches, however many bins)."""

    frames: int = 0
    confidence: float = 0.0  # summed over the frames
    decisions: int = 0
    unsure: int = 0  # decisions too unsure to sort (reason low_confidence)
    per_bin: tuple[int, ...] = (0,) * len(BINS)  # decisions per bin, in BINS order
    corrections: int = 0


@dataclass
class DeviceView:
    """One bin as the broker shows it."""

    device_id: str
    status: Status | None = None
    model: ModelInfo | None = None
    totals: Totals = Totals()
    answers: dict[str, list[CommandResult]] = field(default_factory=dict)
    shadow: list[ShadowItem] = field(default_factory=list)  # the newest SHADOW_KEPT items a shadow reported

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.state == "online"


SHADOW_KEPT = 500  # per bin: a shadow's items are judged over a watch of minutes
ANSWERS_KEPT = 200  # per bin: the newest command ids' answers (a rollout reads its own while it waits)


class FleetView:
    """One MQTT subscriber on every bin's topics under a prefix; thread-safe reads of what it heard."""

    def __init__(self, config: MqttConfig, client_id: str = "smartbin-fleet"):
        self.config, self.prefix = config, config.topic_prefix
        self.lock = threading.Lock()
        self.devices: dict[str, DeviceView] = {}
        self.heard = time.monotonic()  # the last retained status or model: the fleet is known once it is quiet
        self.client_id = f"{client_id}-{int(time.time() * 1000) % 10**9}"
        self.client: mqtt.Client | None = None
        self.fleet: dict[str, bytes] = {}  # the fleet's own topics (the rollout's lock and record), newest payload

    def start(self, timeout: float = 10.0) -> FleetView:
        """Connect and subscribe; SmartbinError when the broker cannot be reached or does not grant it in time."""
        where = f"{self.config.host}:{self.config.port}"
        topics = (Topic.STATUS, Topic.MODEL, Topic.CLASSIFICATION, Topic.DECISION, Topic.COMMAND_RESULT, Topic.SHADOW)
        subscriptions = [(every_bin(self.prefix, t), 1) for t in topics] + [(fleet_topic(self.prefix, "#"), 1)]
        # each of the fleet's own retained topics by name too: RabbitMQ's MQTT plugin gives a retained message
        # only to a subscription without wildcards
        subscriptions += [(fleet_topic(self.prefix, name), 1) for name in (LOCK, RECORD)]
        self.client, subscribed = start_subscriber(self.config, self.client_id, subscriptions, self._on_message)
        if not subscribed.wait(timeout):
            self.close()
            raise SmartbinError(f"the broker {where} did not grant the subscription in {timeout:.0f} s")
        # every bin sends its status and model again: where retained messages do not reach this view (a wildcard
        # on RabbitMQ, another node of a cluster) it still hears each bin
        self.client.publish(fleet_topic(self.prefix, ROLL_CALL), b"", qos=1)
        self.heard = time.monotonic()  # settle() waits for the answers from here
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
        self.client.publish(device_topic(self.prefix, device_id, Topic.COMMAND), payload, qos=Topic.COMMAND.qos)

    def publish_fleet(self, name: str, payload: str, expiry_s: float | None = None) -> None:
        """A retained message on the fleet's own topic ``name`` (empty: cleared), kept by the broker at most
        ``expiry_s`` where it speaks MQTT 5; waits until the broker has it."""
        properties = None
        if expiry_s is not None and self.client.protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = max(1, int(expiry_s))
        info = self.client.publish(fleet_topic(self.prefix, name), payload, qos=1, retain=True, properties=properties)
        info.wait_for_publish(10)

    def fleet_message(self, name: str) -> bytes | None:
        """The newest payload heard on the fleet's topic ``name`` (None: none, or cleared)."""
        with self.lock:
            return self.fleet.get(name) or None

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> dict[str, DeviceView]:
        """Every bin heard of, by device id (the views themselves: read them, do not change them)."""
        with self.lock:
            return dict(self.devices)

    def answers(self, device_id: str, command_id: str) -> list[CommandResult]:
        with self.lock:
            view = self.devices.get(device_id)
            return list(view.answers.get(command_id, [])) if view else []

    def shadow_items(self, device_ids: list[str], since: float) -> list[ShadowItem]:
        """The shadow's items the group reported since ``since`` (time.time() of this host, at arrival)."""
        with self.lock:
            return [
                item for d in device_ids if d in self.devices for item in self.devices[d].shadow if item.ts >= since
            ]

    def mark(self) -> dict[str, Totals]:
        """Every bin's totals now: ``figures`` counts from here."""
        with self.lock:
            return {device_id: view.totals for device_id, view in self.devices.items()}

    def figures(self, device_ids: list[str], since: dict[str, Totals]) -> Figures:
        """The group's frames and items since the ``mark()`` ``since``."""
        with self.lock:
            now = [(self.devices[d].totals, since.get(d, Totals())) for d in device_ids if d in self.devices]
        frames = sum(n.frames - b.frames for n, b in now)
        decisions = sum(n.decisions - b.decisions for n, b in now)
        per_bin = {name: sum(n.per_bin[i] - b.per_bin[i] for n, b in now) for i, name in enumerate(BINS)}
        return Figures(
            frames=frames,
            mean_confidence=sum(n.confidence - b.confidence for n, b in now) / frames if frames else None,
            decisions=decisions,
            low_confidence_share=sum(n.unsure - b.unsure for n, b in now) / decisions if decisions else None,
            per_bin={name: count for name, count in per_bin.items() if count},
            corrections=sum(n.corrections - b.corrections for n, b in now),
        )

    # ------------------------------------------------------------------ paho's thread
    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        kind = topic_of(message.topic)
        rest = message.topic[len(self.prefix) + 1 :] if message.topic.startswith(self.prefix + "/") else ""
        device_id = rest.split("/", 1)[0]
        if device_id == FLEET:
            with self.lock:
                self.fleet[rest.split("/", 1)[-1]] = bytes(message.payload)
            return
        if kind is None or not device_id or not message.payload:
            return
        now = time.monotonic()
        try:
            with self.lock:
                view = self.devices.setdefault(device_id, DeviceView(device_id))
                if kind is Topic.STATUS:
                    view.status, self.heard = Status.model_validate_json(message.payload), now
                elif kind is Topic.MODEL:
                    view.model, self.heard = ModelInfo.model_validate_json(message.payload), now
                elif kind is Topic.CLASSIFICATION:
                    confidence = Classification.model_validate_json(message.payload).confidence
                    t = view.totals
                    view.totals = replace(t, frames=t.frames + 1, confidence=t.confidence + confidence)
                elif kind is Topic.DECISION:
                    decision = Decision.model_validate_json(message.payload)
                    t, index = view.totals, BINS.index(decision.bin)
                    per_bin = tuple(n + (i == index) for i, n in enumerate(t.per_bin))
                    unsure = decision.reason == "low_confidence"
                    view.totals = replace(t, decisions=t.decisions + 1, unsure=t.unsure + unsure, per_bin=per_bin)
                elif kind is Topic.COMMAND_RESULT:
                    answer = CommandResult.model_validate_json(message.payload)
                    if answer.action == "correct" and answer.ok:
                        view.totals = replace(view.totals, corrections=view.totals.corrections + 1)
                    view.answers.setdefault(str(answer.id), []).append(answer)
                    while len(view.answers) > ANSWERS_KEPT:
                        view.answers.pop(next(iter(view.answers)))
                elif kind is Topic.SHADOW:
                    item = ShadowItem.model_validate_json(message.payload)
                    view.shadow.append(item.model_copy(update={"ts": time.time()}))  # when heard, by this clock
                    del view.shadow[:-SHADOW_KEPT]
        except ValidationError as exc:  # another version's message, or not ours: the rest still count
            log.debug("%s: not read (%s)", message.topic, exc.errors()[0]["msg"])
