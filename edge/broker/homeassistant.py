"""Home Assistant MQTT discovery: the bin as one device (device-based discovery, one retained message).

Sensors for the last decision; items sorted today per bin (``total_increasing``: they fall back to 0 at
midnight, which Home Assistant's long-term statistics read as a reset, not as items taken away); the share
of today's low-confidence decisions; an event entity that fires once per sorted item with its bin;
whether the bin is online; and, as diagnostics, the MQTT protocol in use and the model it serves.
Announced on every connect and again whenever Home Assistant says it started
(``<prefix>/status`` = ``online``), as its documentation asks.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge import __version__
from edge.broker.messages import dumps
from edge.config.network import HomeAssistantConfig
from edge.formats.labels import BINS
from edge.wire.topics import Topic, home_assistant_device, home_assistant_status, under

ORIGIN = {"name": "smartbin", "sw": __version__}


def discovery_topic(config: HomeAssistantConfig, device_id: str) -> str:
    """Where the device's discovery message goes (retained)."""
    return home_assistant_device(config.discovery_prefix, device_id)


def status_topic(config: HomeAssistantConfig) -> str:
    """Home Assistant's birth and last-will topic: ``online`` asks every device to announce itself again."""
    return home_assistant_status(config.discovery_prefix)


def retired_topics(config: HomeAssistantConfig, device_id: str) -> list[str]:
    """The per-entity discovery topics of smartbin 0.1.0's first releases: cleared (an empty retained message),
    or Home Assistant would keep those entities beside the device's."""
    prefix, uid = config.discovery_prefix, f"smartbin_{device_id}"
    keys = ["last_bin", "last_label", "confidence", *(f"items_today_{b}" for b in BINS), "low_confidence_share_today"]
    return [f"{prefix}/sensor/{uid}/{key}/config" for key in keys] + [f"{prefix}/binary_sensor/{uid}/online/config"]


def diagnostics(base: str) -> dict[str, dict]:
    """What a technician looks at, not a household: the protocol (a decision's age travels without shared
    clocks over MQTT 5 only) and the model the bin serves, read from its status."""
    return {
        key: {
            "p": "sensor",
            "name": name,
            "state_topic": under(base, Topic.STATUS),
            "value_template": template,
            "entity_category": "diagnostic",
        }
        for key, name, template in (
            ("mqtt_protocol", "MQTT protocol", "{{ value_json.mqtt_protocol }}"),
            ("model", "model", "{{ value_json.model.name }} ({{ value_json.model.variant }})"),
        )
    }


def discovery(base: str, device_id: str) -> dict:
    """The device-based discovery payload for the bin whose topics start with ``base``."""
    uid = f"smartbin_{device_id}"
    decision, metrics = under(base, Topic.DECISION), under(base, Topic.METRICS)
    components: dict[str, dict] = {}
    for key, field in (("last_bin", "bin"), ("last_label", "label"), ("confidence", "confidence")):
        components[key] = {"p": "sensor", "name": key.replace("_", " "), "state_topic": decision}
        components[key]["value_template"] = f"{{{{ value_json.{field} }}}}"
    for b in BINS:
        components[f"items_today_{b}"] = {
            "p": "sensor",
            "name": f"items today {b}",
            "state_topic": metrics,
            "value_template": f"{{{{ value_json.counts.today.per_bin.{b} }}}}",
            "state_class": "total_increasing",
        }
    components["low_confidence_share_today"] = {
        "p": "sensor",
        "name": "low confidence share today",
        "state_topic": metrics,
        "value_template": "{{ value_json.counts.today.low_confidence_share }}",
        "state_class": "measurement",
    }
    components["item_sorted"] = {
        "p": "event",
        "name": "item sorted",
        "state_topic": decision,
        "event_types": list(BINS),
        "value_template": '{ "event_type": "{{ value_json.bin }}", "label": "{{ value_json.label }}" }',
    }
    components |= diagnostics(base)
    for key, component in components.items():
        component["unique_id"] = f"{uid}_{key}"
    # "online" is the availability itself, so it has none of its own
    components["online"] = {
        "p": "binary_sensor",
        "name": "online",
        "unique_id": f"{uid}_online",
        "state_topic": under(base, Topic.STATUS),
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
    }
    return {
        "dev": {"ids": [uid], "name": f"Smart bin {device_id}", "mf": "smartbin", "sw": __version__},
        "o": ORIGIN,
        "cmps": components,
        "availability_topic": under(base, Topic.STATUS),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    }


class Announcer:
    """The bin announced to Home Assistant on every connect, and again whenever Home Assistant says it started."""

    def __init__(self, config: HomeAssistantConfig, base: str, device_id: str):
        self.config, self.base, self.device_id = config, base, device_id

    def connected(self, client: mqtt.Client) -> None:
        """Listen for Home Assistant's restarts, clear what an earlier release announced, announce."""
        client.subscribe(status_topic(self.config), qos=1)
        for topic in retired_topics(self.config, self.device_id):
            client.publish(topic, b"", qos=0, retain=True)  # an ACL may refuse it: nothing to answer then
        self.announce(client)

    def handles(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> bool:
        """Whether ``message`` was Home Assistant's (its birth, ``online``, asks every device to announce)."""
        if message.topic != status_topic(self.config):
            return False
        if message.payload == b"online":
            self.announce(client)
        return True

    def announce(self, client: mqtt.Client) -> None:
        """The discovery message: the bin, its sensors and its events (retained)."""
        payload = dumps(discovery(self.base, self.device_id))
        client.publish(discovery_topic(self.config, self.device_id), payload, qos=1, retain=True)
