"""The MQTT side of the daemon: this bin's topics over one connection (edge/broker/connection.py), decisions
through the outbox (forwarder.py), the bin announced to Home Assistant (homeassistant.py), and on every connect
the retained state again, the status (availability) last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge.broker.connection import Connection
from edge.broker.forwarder import REFUSED_RETRY_S, Forwarder
from edge.broker.homeassistant import Announcer
from edge.broker.messages import dumps
from edge.broker.sample_sender import SampleSender
from edge.broker.will import MIN_INTERVAL_S
from edge.config import MqttConfig
from edge.storage.outbox import Outbox
from edge.wire.topics import ROLL_CALL, Topic, fleet_topic, under

log = logging.getLogger(__name__)

ROLL_CALL_MIN_S = 2.0


class Publisher:
    """This bin on the broker: its messages, its decisions store-and-forward, its availability."""

    def __init__(
        self,
        config: MqttConfig,
        base: str,
        device_id: str,
        outbox: Outbox,
        on_command: Callable[[bytes, bool], None],
        status: Callable[[str], dict],
        retained: Callable[[], dict[Topic, dict]] | None = None,
        reconnect_delay_s: tuple[float, float] | None = None,
        refused_retry_s: float = REFUSED_RETRY_S,
        will_interval_s: float = MIN_INTERVAL_S,
        samples: SampleSender | None = None,
    ):
        self.base, self.outbox = base, outbox
        self.roll_call = fleet_topic(config.topic_prefix, ROLL_CALL)
        self._answered_roll_call = -ROLL_CALL_MIN_S
        self.samples = samples  # kept frames over this connection, behind the decisions (samples.over_mqtt)
        self.on_command = on_command
        self.status = status
        self.retained = retained  # other retained state, by topic, sent again on every connect
        ha = config.home_assistant
        self.home_assistant = Announcer(ha, base, device_id) if ha.enabled else None
        self.forwarder = Forwarder(outbox, self.topic(Topic.DECISION), refused_retry_s)
        self.connection = Connection(
            config,
            config.client_id or f"smartbin-{device_id}",
            self.topic(Topic.STATUS),
            offline=lambda protocol: {**status("offline"), "mqtt_protocol": protocol},
            on_connected=self._on_connected,
            on_ready=lambda: self.forwarder.flush_logged(self.connection),
            on_message=self._on_message,
            on_publish=self._on_publish,
            reconnect_delay_s=reconnect_delay_s,
            will_interval_s=will_interval_s,
        )

    # ------------------------------------------------------------------ what the daemon reads
    @property
    def connected(self):
        """Set while connected (a threading.Event)."""
        return self.connection.connected

    @property
    def connects(self) -> int:
        return self.connection.connects

    @property
    def protocol(self) -> str:
        """The MQTT version spoken now: "5" or "3.1.1"."""
        return self.connection.protocol

    @property
    def refused(self) -> int:
        """Decisions the broker refused (each refusal counted; the decision stays in the outbox)."""
        return self.forwarder.refused

    @property
    def refusal(self) -> str | None:
        """The last refusal's reason, until the broker accepts decisions again."""
        return self.forwarder.refusal

    def topic(self, topic: Topic) -> str:
        """This bin's topic (edge/wire/topics.py)."""
        return under(self.base, topic)

    def _status(self, state: str) -> dict:
        """The retained status, with the MQTT version of this connection (the view may predate a switch)."""
        return {**self.status(state), "mqtt_protocol": self.protocol}

    # ------------------------------------------------------------------ paho's thread
    def _on_connected(self, client: mqtt.Client) -> None:
        client.subscribe([(self.topic(Topic.COMMAND), Topic.COMMAND.qos), (self.roll_call, 1)])
        if self.home_assistant is not None:
            self.home_assistant.connected(client)
        self._send_retained(client)
        self.forwarder.reconnected(client)
        if self.samples is not None:
            self.samples.reconnected(client)

    def _send_retained(self, client: mqtt.Client) -> None:
        """What a newcomer should know of this bin (the model, then the status): at every connect, and to a
        roll call (at most every ROLL_CALL_MIN_S: anyone on the broker may call)."""
        for topic, payload in (self.retained() if self.retained else {}).items():
            self._send(client, topic, dumps(payload))
        self._send(client, Topic.STATUS, dumps(self._status("online")))  # availability last, after the rest

    def _on_publish(self, mid: int, reason: mqtt.ReasonCode | None) -> None:
        self.forwarder.acked(mid, reason)
        if self.samples is not None:
            self.samples.acked(mid, reason)

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        if self.home_assistant is not None and self.home_assistant.handles(self.connection.client, message):
            return
        if message.topic == self.roll_call:
            if not message.retain and time.monotonic() - self._answered_roll_call >= ROLL_CALL_MIN_S:
                self._answered_roll_call = time.monotonic()
                self._send_retained(self.connection.client)
            return
        if message.topic == self.topic(Topic.COMMAND):
            # retain is set only on what the broker kept from before this subscription: never carried out
            self.on_command(message.payload, bool(message.retain))

    # ------------------------------------------------------------------ the daemon's thread
    def start(self) -> None:
        """Connect in the background (the Last Will is the status as it is now)."""
        self.connection.start()

    def read_tls_again(self) -> None:
        """A reload that left ``mqtt:`` as it was: a renewed certificate is used from the next connect."""
        self.connection.read_tls_again()

    def publish_json(self, topic: Topic, payload: dict) -> None:
        """A message on one of this bin's topics, as the topic is sent (its QoS, retained or not)."""
        self.publish_bytes(topic, dumps(payload))

    def publish_status(self) -> None:
        """The retained status (availability and what runs), e.g. after a pause or a model change."""
        self.publish_json(Topic.STATUS, self._status("online"))

    def publish_bytes(self, topic: Topic, payload: bytes | str) -> None:
        if self.connected.is_set():
            self._send(self.connection.client, topic, payload)

    def _send(self, client: mqtt.Client, topic: Topic, payload: bytes | str) -> mqtt.MQTTMessageInfo:
        """One of this bin's topics, sent as the topic's definition says (QoS, retained)."""
        return client.publish(self.topic(topic), payload, qos=topic.qos, retain=topic.retain)

    def publish_decision(self, payload: dict) -> None:
        """Store durably, then send. Raises OutboxError when the outbox cannot be written."""
        self.forwarder.add(payload, self.connection)

    def maintain(self) -> None:
        """Called from the daemon's loop: the connection's upkeep (a protocol fallback, the will), acks and
        the backlog; kept samples when no decision waits."""
        self.connection.maintain()
        self.forwarder.flush_logged(self.connection)
        if self.samples is not None and self.forwarder.idle():
            self.samples.flush(self.connection)

    def stop(self, timeout: float = 3.0) -> int:
        """Wait (up to ``timeout``) for the outbox (then the samples) to drain, publish offline, disconnect.
        Returns the decisions left."""
        deadline = time.monotonic() + timeout
        self.forwarder.drain(deadline, self.connection)
        if self.samples is not None:
            self.samples.drain(deadline, self.connection)
        if self.connected.is_set():
            info = self._send(self.connection.client, Topic.STATUS, dumps(self._status("offline")))
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (ValueError, RuntimeError):
                log.warning("offline status could not be sent")
        self.connection.close()
        return self.forwarder.depth()
