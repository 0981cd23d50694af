"""The MQTT topics, in one place: ``<prefix>/<device_id>/<topic>`` (Frigate's layout), the prefix from
``mqtt.topic_prefix``. Every publisher and subscriber of ours (the daemon, the actuator, the fleet
simulator, the demo, the bench) builds its topics here; the payloads are in edge/schemas/."""

from __future__ import annotations

from enum import Enum

DEFAULT_PREFIX = "smartbin"
FLEET = "_fleet"  # not a device id: the fleet's own topics live under it
# A fleet topic every bin answers by sending its retained state (status, model) again: on a broker that does not
# deliver retained messages to a wildcard subscription, or keeps them on one node of a cluster (RabbitMQ's MQTT
# plugin), a fleet view still hears every bin.
ROLL_CALL = "roll_call"


class Topic(str, Enum):
    """A bin's topics, each the suffix after ``<prefix>/<device_id>/``; edge/schemas/<name>.json is its payload,
    ``qos`` and ``retain`` how every publisher sends it."""

    STATUS = "status"  # the Last Will too
    DECISION = "decision"  # one per item, through the outbox
    CLASSIFICATION = "classification"  # every classified frame
    METRICS = "metrics"  # periodic
    MODEL = "model"
    COMMAND = "command"  # subscribed by the daemon
    COMMAND_RESULT = "command/result"  # the answer to every command
    SNAPSHOT = "snapshot"  # a JPEG
    ACTUATOR_ACK = "actuator/ack"  # from the actuator
    SHADOW = "shadow"  # one per item while a model runs in the shadow of the serving one
    SAMPLE = "sample"  # a kept frame and its JSON, for bins no workstation can reach (samples.over_mqtt)

    @property
    def schema(self) -> str:
        """The file in edge/schemas/ that describes its payload."""
        return f"{self.name.lower()}.json"

    @property
    def qos(self) -> int:
        """The QoS it is published (and subscribed) with."""
        return DELIVERY[self][0]

    @property
    def retain(self) -> bool:
        """Whether the broker keeps the last one for a newcomer."""
        return DELIVERY[self][1]


# How each topic is sent: (QoS, retained). What is lost without harm goes at QoS 0.
DELIVERY: dict[Topic, tuple[int, bool]] = {
    Topic.STATUS: (1, True),
    Topic.DECISION: (1, False),
    Topic.CLASSIFICATION: (0, False),
    Topic.METRICS: (0, False),
    Topic.MODEL: (1, True),
    Topic.COMMAND: (1, False),
    Topic.COMMAND_RESULT: (1, False),
    Topic.SNAPSHOT: (0, False),
    Topic.ACTUATOR_ACK: (1, False),
    Topic.SHADOW: (1, False),
    Topic.SAMPLE: (1, False),
}


def device_base(prefix: str, device_id: str) -> str:
    """``<prefix>/<device_id>``: where one bin's topics live."""
    return f"{prefix}/{device_id}"


def device_topic(prefix: str, device_id: str, topic: Topic) -> str:
    """One bin's topic."""
    return f"{device_base(prefix, device_id)}/{topic.value}"


def under(base: str, topic: Topic) -> str:
    """A topic under a bin's base (``device_base``)."""
    return f"{base}/{topic.value}"


def every_bin(prefix: str, topic: Topic) -> str:
    """The subscription to one topic of every bin: ``<prefix>/+/<topic>``."""
    return f"{prefix}/+/{topic.value}"


def all_of(base: str) -> str:
    """The subscription to all of one bin's topics: ``<base>/#``."""
    return f"{base}/#"


def topic_of(topic: str) -> Topic | None:
    """Which of our topics a received topic is (its last one or two levels), None for another."""
    parts = topic.split("/")
    for suffix in ("/".join(parts[-2:]), parts[-1]):
        try:
            return Topic(suffix)
        except ValueError:
            continue
    return None


def fleet_topic(prefix: str, name: str) -> str:
    """A topic of the fleet's own, beside the bins' (``<prefix>/_fleet/<name>``): the rollout's lock and record."""
    return f"{prefix}/{FLEET}/{name}"


def home_assistant_status(discovery_prefix: str) -> str:
    """Home Assistant's birth and last-will topic (``online``: every device announces itself again)."""
    return f"{discovery_prefix}/status"


def home_assistant_device(discovery_prefix: str, device_id: str) -> str:
    """Where a device's discovery message goes (retained)."""
    return f"{discovery_prefix}/device/{device_id}/config"
