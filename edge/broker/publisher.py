"""The MQTT side of the daemon (paho-mqtt 2.x): the topic contract, availability, store-and-forward.

Decisions go to the SQLite outbox first and are deleted only on the broker's PUBACK; on
every (re)connect the unacknowledged backlog is sent again, in order. Subscribers
de-duplicate on ``event_id``.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge.broker import homeassistant
from edge.broker.client import connect_problem, forget_resends, make_client, refuses_mqtt5, tls_files
from edge.broker.freshness import EXPIRY_S, sent_properties
from edge.broker.messages import dumps, marked_earlier_boot
from edge.broker.will import MIN_INTERVAL_S, Will
from edge.config import MqttConfig
from edge.storage.outbox import Outbox, OutboxError
from edge.system.queues import drain
from edge.system.repeats import OncePerChange
from edge.wire.payloads import Routing
from edge.wire.topics import Topic, under

log = logging.getLogger(__name__)

MAX_INFLIGHT = 50
MADE_REMEMBERED = 10000  # decisions whose monotonic birth time is kept until acknowledged
REFUSED_RETRY_S = 30.0  # a decision the broker refused (MQTT 5 PUBACK >= 0x80) is offered again after this
V5_ANSWER_TIMEOUT_S = 5.0


class Publisher:
    """Connects, keeps availability, publishes, and forwards the outbox."""

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
    ):
        self.config = config
        # Jitter: a fleet of bins must not reconnect to a restarted broker in lockstep.
        self.reconnect_delay_s = reconnect_delay_s or (1 + random.randint(0, 2), 60)
        self.retained = retained  # other retained state, by topic, sent again on every connect
        self.base = base
        self.device_id = device_id
        self.outbox = outbox
        self.on_command = on_command
        self.status = status
        self.connected = threading.Event()
        self.connects = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._sent_upto = 0
        self._acks: queue.SimpleQueue[tuple[int, mqtt.ReasonCode | None]] = queue.SimpleQueue()
        self.refused_retry_s = refused_retry_s
        self.refused = 0  # decisions the broker refused (each refusal counted; the decision stays in the outbox)
        self.refusal: str | None = None  # the last refusal's reason, until the broker accepts decisions again
        self._retry_refused: tuple[int, float] | None = None  # (oldest refused row, monotonic time to offer it)
        self._made: dict[int, float] = {}  # outbox row -> monotonic time its decision was made (this run)
        self._protocol = mqtt.MQTTv311 if config.protocol == "3.1.1" else mqtt.MQTTv5
        self._switch_protocol: str | None = None  # why the broker seems to speak only 3.1.1
        # A fallback a refusal caused is for good; one a silence caused (a slow first CONNACK after a power cut,
        # every bin reconnecting over TLS) is tried again: MQTT 5 first at each reconnect, until it answers.
        self._fallback_for_good = False
        self._spoke_5 = False  # the broker answered MQTT 5 once: it speaks it, a later drop is no sign
        self._socket_opened: float | None = None  # monotonic time the broker accepted TCP, until CONNACK
        self.outbox_errors = OncePerChange(log, "the outbox")
        self._tls = tls_files(config)
        self.will = Will(will_interval_s)
        self.client = self._make_client()

    # ------------------------------------------------------------------ setup
    @property
    def protocol(self) -> str:
        """The MQTT version this client speaks now: "5" or "3.1.1"."""
        return "5" if self._protocol == mqtt.MQTTv5 else "3.1.1"

    def _status(self, state: str) -> dict:
        """The retained status, with the MQTT version of this connection (the view may predate a switch)."""
        return {**self.status(state), "mqtt_protocol": self.protocol}

    def topic(self, topic: Topic) -> str:
        """This bin's topic (edge/wire/topics.py)."""
        return under(self.base, topic)

    def _make_client(self) -> mqtt.Client:
        client_id = self.config.client_id or f"smartbin-{self.device_id}"
        client = make_client(self.config, client_id, self._protocol, tls=self._tls)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(1000)
        low, high = self.reconnect_delay_s
        client.reconnect_delay_set(min_delay=low, max_delay=high)
        no_delay = client.on_socket_open

        def on_socket_open(client, userdata, sock) -> None:
            no_delay(client, userdata, sock)
            self._socket_opened = time.monotonic()

        client.on_socket_open = on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect_fail(self, client, userdata) -> None:
        """paho retries silently; find out why once and say it (TLS mismatch, refused, unreachable)."""
        reason = connect_problem(self.config, self._tls)
        if reason != self.last_error:
            self.last_error = reason
            log.error("cannot connect to %s:%d: %s (retrying)", self.config.host, self.config.port, reason)

    def read_tls_again(self) -> None:
        """A reload that left ``mqtt:`` as it was: a renewed certificate is checked now and used from the next
        connect (this connection was made with the old one, which stays valid for it)."""
        if self._tls is not None:
            self._tls.read_again()

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff by itself. The Last Will is the status
        as it is now (made here, not when the publisher was: its owner's status may read the publisher)."""
        offline, status = self._status("offline"), Topic.STATUS
        self.client.will_set(self.topic(status), dumps(offline), qos=status.qos, retain=status.retain)
        self.will.set(offline)
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    # ------------------------------------------------------------------ callbacks (paho's thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("%s", self.last_error)
            if refuses_mqtt5(reason_code):
                self._speaks_only_311(f"refused MQTT 5 ({reason_code})", for_good=True)
            return
        self._socket_opened = None
        self.connects += 1
        self._spoke_5 = self._spoke_5 or self._protocol == mqtt.MQTTv5
        self.last_error = None
        client.subscribe(self.topic(Topic.COMMAND), qos=Topic.COMMAND.qos)
        if self.config.home_assistant.enabled:
            client.subscribe(homeassistant.status_topic(self.config.home_assistant), qos=1)
            for topic in homeassistant.retired_topics(self.config.home_assistant, self.device_id):
                client.publish(topic, b"", qos=0, retain=True)  # an ACL may refuse it: nothing to answer then
            self._publish_discovery()
        for topic, payload in (self.retained() if self.retained else {}).items():
            self._send(client, topic, dumps(payload))
        self._send(client, Topic.STATUS, dumps(self._status("online")))  # availability last, after the rest
        with self._lock:
            forget_resends(client, set(self._inflight))
            self._inflight.clear()
            self._sent_upto = 0
        self.connected.set()
        log.info("connected to %s:%d", self.config.host, self.config.port)
        try:
            self.flush()
        except OutboxError as exc:  # paho's thread: an exception here would end it
            self.outbox_errors.error(str(exc))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            log.warning("disconnected from broker: %s", reason_code)
            if self._protocol == mqtt.MQTTv311 and self.config.protocol == "auto" and not self._fallback_for_good:
                self._switch_protocol = "5"  # the fallback was a guess: MQTT 5 first again at this reconnect
        elif self._socket_opened is not None:
            # The broker took the TCP connection and dropped it before any CONNACK: an MQTT 3.1.1-only
            # broker (amqtt, old mosquitto) answers an MQTT 5 CONNECT so. A broker that is down never gets here.
            self._speaks_only_311("closed the connection before answering MQTT 5")
        self._socket_opened = None
        self.connected.clear()

    def _speaks_only_311(self, sign: str, for_good: bool = False) -> None:
        """The one rule of the fallback: under ``protocol: auto``, a sign that the broker speaks only MQTT 3.1.1
        switches to it, unless the broker has answered MQTT 5 before (the loop makes the switch: ``maintain``).
        ``for_good``: the broker refused MQTT 5 in so many words; otherwise MQTT 5 is tried again at the next
        reconnect."""
        if self.config.protocol == "auto" and self._protocol == mqtt.MQTTv5 and not self._spoke_5:
            self._switch_protocol = sign
            self._fallback_for_good = for_good

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Never take our lock here: paho holds its own message lock while calling this.
        self._acks.put((mid, reason_code))

    def _on_message(self, client, userdata, message) -> None:
        ha = self.config.home_assistant
        if ha.enabled and message.topic == homeassistant.status_topic(ha):
            if message.payload == b"online":  # Home Assistant (re)started: it asks every device to announce
                self._publish_discovery()
            return
        if message.topic == self.topic(Topic.COMMAND):
            # retain is set only on what the broker kept from before this subscription: never carried out
            self.on_command(message.payload, bool(message.retain))

    # ------------------------------------------------------------------ publishing
    def publish_json(self, topic: Topic, payload: dict) -> None:
        """A message on one of this bin's topics, as the topic is sent (its QoS, retained or not)."""
        self.publish_bytes(topic, dumps(payload))

    def publish_status(self) -> None:
        """The retained status (availability and what runs), e.g. after a pause or a model change."""
        self.publish_json(Topic.STATUS, self._status("online"))

    def publish_bytes(self, topic: Topic, payload: bytes | str) -> None:
        if self.connected.is_set():
            self._send(self.client, topic, payload)

    def _send(self, client: mqtt.Client, topic: Topic, payload: bytes | str) -> mqtt.MQTTMessageInfo:
        """One of this bin's topics, sent as the topic's definition says (QoS, retained)."""
        return client.publish(self.topic(topic), payload, qos=topic.qos, retain=topic.retain)

    def publish_decision(self, payload: dict) -> None:
        """Store durably, then send. Raises OutboxError when the outbox cannot be written."""
        # Its age from here on needs no wall clock; the moments since its ts was stamped (this host, just now)
        # count too, unless the wall clock was stepped meanwhile.
        routing = Routing.model_validate(payload)
        since = time.time() - routing.ts
        made = time.monotonic() - (since if 0 <= since < 1 else 0.0)
        self._made[self.outbox.add(routing.event_id, self.topic(Topic.DECISION), payload, routing.ts)] = made
        while len(self._made) > MADE_REMEMBERED:  # rows the outbox dropped when full are never acknowledged
            del self._made[next(iter(self._made))]
        self.flush()

    def _age(self, row_id: int, payload: str) -> float:
        """Seconds since the decision was made: by the monotonic clock for this run's, by this host's wall
        clock for a backlog from before a restart (either way, one host's clock only)."""
        made = self._made.get(row_id)
        if made is not None:
            return time.monotonic() - made
        try:
            return time.time() - float(Routing.model_validate_json(payload).ts)
        except ValueError:  # pydantic's ValidationError too
            return 0.0

    def flush(self) -> None:
        """Send unacknowledged outbox rows not yet sent on this connection, in order; refused ones again once
        their retry is due."""
        self.process_acks()
        with self._lock:
            if self._retry_refused is not None and time.monotonic() >= self._retry_refused[1]:
                self._sent_upto = min(self._sent_upto, self._retry_refused[0] - 1)
                self._retry_refused = None
            while self.connected.is_set() and len(self._inflight) < MAX_INFLIGHT:
                rows = self.outbox.pending(self._sent_upto, MAX_INFLIGHT - len(self._inflight))
                if not rows:
                    return
                waiting = set(self._inflight.values())
                for row_id, topic, payload, earlier_boot in rows:
                    self._sent_upto = row_id
                    if row_id in waiting:  # sent before a refusal rewound, and not answered yet
                        continue
                    if earlier_boot:  # decided before a power cut: a record now, whatever the clocks say
                        payload = marked_earlier_boot(payload)
                    properties = None
                    if self._protocol == mqtt.MQTTv5:  # how old it is, and a countdown for the broker
                        properties = sent_properties(EXPIRY_S if earlier_boot else self._age(row_id, payload))
                    info = self.client.publish(topic, payload, qos=1, properties=properties)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        return  # the connection dropped; on_connect replays from here
                    self._inflight[info.mid] = row_id

    def process_acks(self) -> None:
        """Delete the rows the broker accepted from the outbox; keep the refused ones (an ACL that does not
        let this client publish its decisions, a quota, a size limit) and offer them again later."""
        for mid, reason in drain(self._acks):
            with self._lock:
                row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue
            if reason is not None and reason.is_failure:
                self._refused(row_id, reason)
                continue
            self.outbox.ack(row_id)
            self._made.pop(row_id, None)
            if self.refusal is not None and self._retry_refused is None:
                log.info("the broker accepts decisions again")
                self.refusal = None

    def _refused(self, row_id: int, reason: mqtt.ReasonCode) -> None:
        self.refused += 1
        why = f"the broker refused a decision: {reason} (0x{reason.value:02x}); kept in the outbox"
        if why != self.refusal:
            log.error("%s, offered again every %g s", why, self.refused_retry_s)
            self.refusal = why
        with self._lock:
            oldest = row_id if self._retry_refused is None else min(row_id, self._retry_refused[0])
            self._retry_refused = (oldest, time.monotonic() + self.refused_retry_s)

    def maintain(self) -> None:
        """Called from the daemon's loop: acks, backlog, and a protocol fallback if the broker asked for one."""
        opened = self._socket_opened
        if opened is not None and time.monotonic() - opened > V5_ANSWER_TIMEOUT_S:
            # some 3.1.1-only brokers take the connection and never answer MQTT 5
            self._speaks_only_311(f"did not answer MQTT 5 within {V5_ANSWER_TIMEOUT_S:g} s")
        if self._switch_protocol:
            self._switch()
        elif self.connected.is_set() and self.will.due(lambda: self._status("offline")):
            self._renew_will()
        try:
            self.flush()
            self.outbox_errors.ok()
        except OutboxError as exc:  # every loop turn while the card fails: logged once per change
            self.outbox_errors.error(str(exc))

    def _switch(self) -> None:
        """Reconnect with the other MQTT version, as ``_switch_protocol`` asks (the loop's thread)."""
        sign, self._switch_protocol = self._switch_protocol, None
        where = f"{self.config.host}:{self.config.port}"
        if sign == "5":
            log.info("trying MQTT 5 again with the broker at %s (the fallback to 3.1.1 was not a refusal)", where)
            protocol = mqtt.MQTTv5
        else:
            how = "from now on" if self._fallback_for_good else "until it answers MQTT 5 at a reconnect"
            log.warning("the broker at %s %s: using MQTT 3.1.1 %s (set mqtt.protocol to pin one)", where, sign, how)
            protocol = mqtt.MQTTv311
        self._discard_client()
        self._protocol = protocol
        self._new_client()

    def _publish_discovery(self) -> None:
        """Home Assistant discovery (edge/broker/homeassistant.py): the bin, its sensors and its events."""
        ha = self.config.home_assistant
        payload = homeassistant.discovery(self.base, self.device_id)
        self.client.publish(homeassistant.discovery_topic(ha, self.device_id), dumps(payload), qos=1, retain=True)

    def _renew_will(self) -> None:
        """Reconnect cleanly (the old will is not sent) with a will that says what the bin is now."""
        log.info("the bin's model, health or pause state changed: renewing its Last Will (a clean reconnect)")
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self._new_client()

    def _new_client(self) -> None:
        """A client in place of the one just let go, connecting (with a will that says what the bin is now)."""
        self._socket_opened = None
        self.client = self._make_client()
        self.start()

    def _discard_client(self) -> None:
        """Stop the old client's thread and close its socket: nothing of it outlives the switch."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # ------------------------------------------------------------------ shutdown
    def stop(self, timeout: float = 3.0) -> int:
        """Wait (up to ``timeout``) for the outbox to drain, publish offline, disconnect. Returns rows left.
        A backlog waits for a connection still being made too: a short run (a finite source) that starts
        with one would otherwise end before its first CONNACK and send nothing."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and self.outbox.depth() > 0:
                if self.connected.is_set():
                    self.flush()
                time.sleep(0.05)
        except OutboxError as exc:
            self.outbox_errors.error(str(exc))
        if self.connected.is_set():
            info = self._send(self.client, Topic.STATUS, dumps(self._status("offline")))
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (ValueError, RuntimeError):
                log.warning("offline status could not be sent")
        if self.connected.is_set():
            self.client.disconnect()
        self._discard_client()
        self.process_acks()
        try:
            return self.outbox.depth()
        except OutboxError as exc:
            self.outbox_errors.error(str(exc))
            return 0
