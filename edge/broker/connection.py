"""One MQTT connection of a bin (paho-mqtt 2.x): the client, the protocol, TLS, the Last Will, reconnects.

MQTT 5 first under ``protocol: auto``, MQTT 3.1.1 where the broker shows it speaks only that: a refusal in so
many words is for good; a guess (a silence or a closed socket: a slow first CONNACK after a power cut, a
load balancer whose broker is down) is tried again at each reconnect and, while connected, at growing intervals.
The TLS files are read again before every connect. The Last Will says what the bin is now: renewed by a
clean reconnect when that changes (edge/broker/will.py). What a connect and a message mean is the owner's
(``on_connected``, ``on_ready``, ``on_message``, ``on_publish``): the outbox forwarding and Home Assistant sit
beside it (edge/broker/forwarder.py, homeassistant.py), the publisher puts them together.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge.broker.client import V5_ANSWER_TIMEOUT_S, FailOver, connect_problem, make_client, refuses_mqtt5, tls_files
from edge.broker.messages import dumps
from edge.broker.will import MIN_INTERVAL_S, Will
from edge.config import MqttConfig
from edge.wire.topics import Topic

log = logging.getLogger(__name__)

MAX_INFLIGHT = 50
V5_RETRY_MAX_S = 3600.0  # a guessed fallback tries MQTT 5 again at most this far apart


class Connection:
    """Connects and reconnects (with jitter), falls back between protocols, keeps the will current."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will_topic: str,
        offline: Callable[[str], dict],
        on_connected: Callable[[mqtt.Client], None],
        on_ready: Callable[[], None],
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_publish: Callable[[int, mqtt.ReasonCode | None], None],
        reconnect_delay_s: tuple[float, float] | None = None,
        will_interval_s: float = MIN_INTERVAL_S,
    ):
        self.config, self.client_id, self.will_topic = config, client_id, will_topic
        self.offline = offline  # the offline status for a protocol ("5"/"3.1.1"): the will
        # on_connected: what to send first (before anyone else sees it connected); on_ready: then
        self.on_connected, self.on_ready = on_connected, on_ready
        self.on_message, self.on_publish = on_message, on_publish
        # Jitter: a fleet of bins must not reconnect to a restarted broker in lockstep.
        self.reconnect_delay_s = reconnect_delay_s or (1 + random.randint(0, 2), 60)
        self.connected = threading.Event()
        self.connects = 0
        self.last_error: str | None = None
        self._protocol = mqtt.MQTTv311 if config.protocol == "3.1.1" else mqtt.MQTTv5
        self._switch_protocol: str | None = None  # why the broker seems to speak only 3.1.1
        # A fallback a refusal caused is for good; one a silence caused (a slow first CONNACK after a power cut,
        # every bin reconnecting over TLS) is tried again: MQTT 5 first at each reconnect, until it answers.
        self._fallback_for_good = False
        self._spoke_5 = False  # the broker answered MQTT 5 once: it speaks it, a later drop is no sign
        # A 3.1.1 CONNECT closed before its CONNACK too: the closes are not about the protocol (a load balancer
        # whose broker is down), so they are no sign until the next connect.
        self._closes_no_sign = False
        # Connected on a guessed fallback: MQTT 5 is tried again (a clean reconnect) at this monotonic time; the
        # interval starts at the longest reconnect delay and doubles up to V5_RETRY_MAX_S.
        self._v5_retry_at: float | None = None
        self._v5_retry_s = self.reconnect_delay_s[1]
        self._socket_opened: float | None = None  # monotonic time the broker accepted TCP, until CONNACK
        self._tls = tls_files(config)
        self._failover = FailOver(config, client_id)
        self.will = Will(will_interval_s)
        self.client = self._make_client()

    @property
    def protocol(self) -> str:
        """The MQTT version this client speaks now: "5" or "3.1.1"."""
        return "5" if self._protocol == mqtt.MQTTv5 else "3.1.1"

    def _make_client(self) -> mqtt.Client:
        client = make_client(self.config, self._failover.client_id(), self._protocol, tls=self._tls)
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
        client.on_publish = lambda client, userdata, mid, reason_code, properties: self.on_publish(mid, reason_code)
        client.on_message = lambda client, userdata, message: self.on_message(message)
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect_fail(self, client, userdata) -> None:
        """paho retries silently; find out why once and say it (TLS mismatch, refused, unreachable)."""
        host, port = self._failover.current()
        reason = connect_problem(self.config.model_copy(update={"host": host, "port": port}), self._tls)
        if reason != self.last_error:
            self.last_error = reason
            log.error("cannot connect to %s:%d: %s (retrying)", host, port, reason)
        self._failover(client)  # the next of mqtt.brokers, if there are more

    def read_tls_again(self) -> None:
        """A reload that left ``mqtt:`` as it was: a renewed certificate is checked now and used from the next
        connect (this connection was made with the old one, which stays valid for it)."""
        if self._tls is not None:
            self._tls.read_again()

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff by itself. The Last Will is the offline
        status as it is now (made here: its owner's status may read this connection)."""
        offline, status = self.offline(self.protocol), Topic.STATUS
        self.client.will_set(self.will_topic, dumps(offline), qos=status.qos, retain=status.retain)
        self.will.set(offline)
        host, port = self._failover.current()  # where the last connection was, after a switch or a will renewal
        self.client.connect_async(host, port, keepalive=self.config.keepalive)
        self.client.loop_start()

    # ------------------------------------------------------------------ callbacks (paho's thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("%s", self.last_error)
            if refuses_mqtt5(reason_code):
                self._speaks_only_311(f"refused MQTT 5 ({reason_code})", for_good=True)
            return
        self._socket_opened, self._closes_no_sign = None, False
        self.connects += 1
        self._spoke_5 = self._spoke_5 or self._protocol == mqtt.MQTTv5
        guessed = self._protocol == mqtt.MQTTv311 and self.config.protocol == "auto" and not self._fallback_for_good
        self._v5_retry_at = time.monotonic() + self._v5_retry_s if guessed else None
        self.last_error = None
        self.on_connected(client)
        self.connected.set()
        log.info("connected to %s:%d", *self._failover.current())
        self.on_ready()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        guessed = self._protocol == mqtt.MQTTv311 and self.config.protocol == "auto" and not self._fallback_for_good
        if self.connected.is_set():
            log.warning("disconnected from broker: %s", reason_code)
            if guessed:
                self._switch_protocol = "5"  # the fallback was a guess: MQTT 5 first again at this reconnect
        elif self._socket_opened is not None and guessed:
            self._closes_no_sign, self._switch_protocol = True, "5"  # 3.1.1 was closed as well: no protocol sign
        elif self._socket_opened is not None and not self._closes_no_sign:
            # The broker took the TCP connection and dropped it before any CONNACK: an MQTT 3.1.1-only
            # broker (amqtt, old mosquitto) answers an MQTT 5 CONNECT so. A broker that is down never gets here.
            self._speaks_only_311("closed the connection before answering MQTT 5")
        self._socket_opened, self._v5_retry_at = None, None
        self.connected.clear()

    def _speaks_only_311(self, sign: str, for_good: bool = False) -> None:
        """The one rule of the fallback: under ``protocol: auto``, a sign that the broker speaks only MQTT 3.1.1
        switches to it, unless the broker has answered MQTT 5 before (the loop makes the switch: ``maintain``).
        ``for_good``: the broker refused MQTT 5 in so many words; otherwise MQTT 5 is tried again at the next
        reconnect."""
        if self.config.protocol == "auto" and self._protocol == mqtt.MQTTv5 and not self._spoke_5:
            self._switch_protocol = sign
            self._fallback_for_good = for_good

    # ------------------------------------------------------------------ the loop's thread
    def maintain(self) -> None:
        """A protocol fallback if the broker asked for one, else a renewed will if what it says changed."""
        opened = self._socket_opened
        if opened is not None and time.monotonic() - opened > V5_ANSWER_TIMEOUT_S:
            # some 3.1.1-only brokers take the connection and never answer MQTT 5
            self._speaks_only_311(f"did not answer MQTT 5 within {V5_ANSWER_TIMEOUT_S:g} s")
        retry = self._v5_retry_at
        if retry is not None and time.monotonic() > retry and self.connected.is_set():
            self._v5_retry_at, self._v5_retry_s = None, min(2 * self._v5_retry_s, V5_RETRY_MAX_S)
            self._switch_protocol = "5"  # the fallback was a guess: see whether the broker answers MQTT 5 now
        if self._switch_protocol:
            self._switch()
        elif self.connected.is_set() and self.will.due(lambda: self.offline(self.protocol)):
            self._renew_will()

    def _switch(self) -> None:
        """Reconnect with the other MQTT version, as ``_switch_protocol`` asks."""
        sign, self._switch_protocol = self._switch_protocol, None
        where = ":".join(map(str, self._failover.current()))
        if sign == "5":
            log.info("trying MQTT 5 again with the broker at %s (the fallback to 3.1.1 was not a refusal)", where)
            protocol = mqtt.MQTTv5
        else:
            how = "from now on" if self._fallback_for_good else "until it answers MQTT 5 at a reconnect"
            log.warning("the broker at %s %s: using MQTT 3.1.1 %s (set mqtt.protocol to pin one)", where, sign, how)
            protocol = mqtt.MQTTv311
        self.close()
        self._protocol = protocol
        self._new_client()

    def _renew_will(self) -> None:
        """Reconnect cleanly (the old will is not sent) with a will that says what the bin is now."""
        log.info("the bin's model, health or pause state changed: renewing its Last Will (a clean reconnect)")
        self.close()
        self._new_client()

    def _new_client(self) -> None:
        """A client in place of the one just let go, connecting (with a will that says what the bin is now)."""
        self._socket_opened = None
        self.client = self._make_client()
        self.start()

    def close(self) -> None:
        """Let the client go with a clean goodbye (the broker drops the will: the bin never looks offline for a
        switch or a will renewal), and nothing of it outlives a switch or a stop. Its callbacks go first: a CONNACK
        that lands while the thread stops is no connection, the goodbye no drop. The DISCONNECT goes first: it
        wakes the network thread, which usually writes it before it ends; one the thread had no turn to write
        (a busy CPU: a will seen in CI) is written here once the thread has stopped."""
        self.connected.clear()
        self.client.on_connect = self.client.on_disconnect = None
        self.client.disconnect()  # also to an attempt still waiting for its CONNACK: its session may be open
        self.client.loop_stop()
        try:
            self.client.loop_write()  # what is still queued, the DISCONNECT among it (nothing when it went already)
        except OSError:  # the link is gone: the broker sends the will, as for any drop
            pass
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
