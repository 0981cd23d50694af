"""The one place an MQTT client is made: protocol, credentials, TLS, logging; mistakes are config errors.

The daemon's publisher, the actuator and the fleet simulator all connect through ``make_client``,
so a TLS option or a key passphrase works the same in each of them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.system.tls import TlsFiles

log = logging.getLogger(__name__)

V5_ANSWER_TIMEOUT_S = 5.0  # a broker silent this long after an MQTT 5 CONNECT is taken for a 3.1.1-only one

UNSUPPORTED_PROTOCOL = 132  # CONNACK reason (MQTT 5): the broker speaks only MQTT 3.1.1


def refuses_mqtt5(reason_code: mqtt.ReasonCode) -> bool:
    """A CONNACK that says the broker does not speak MQTT 5 (3.1.1's "unacceptable protocol version", 1, or
    MQTT 5's 0x84): a refusal in so many words, unlike a silence."""
    return reason_code.value in (1, UNSUPPORTED_PROTOCOL)


PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5, "auto": mqtt.MQTTv5}  # auto: 5 first, then 3.1.1


def connect_problem(config: MqttConfig, tls: TlsFiles | None) -> str:
    """paho retries silently: why a connection fails (TLS refused, TCP refused, unreachable), found by trying."""
    try:
        with socket.create_connection((config.host, config.port), timeout=5) as sock:
            if tls is not None:
                with tls.context.wrap_socket(sock, server_hostname=config.host):
                    pass
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the broker's certificate was refused: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "the broker accepted TCP/TLS but not the MQTT connection"


def forget_resends(client: mqtt.Client, mids: set[int]) -> None:
    """paho sends its unacknowledged copies again after a reconnect, with the properties (a decision's age) they
    had when first sent; the outbox sends the same decisions again with their age now. Keep only the outbox's:
    one copy a connection, never one that says it is younger than it is. (paho 2 keeps them in
    ``_out_messages`` under its mutex; tests/broker/test_mqtt_client.py fails if that changes.)"""
    with client._out_message_mutex:
        for mid in mids:
            client._out_messages.pop(mid, None)


def tls_files(config: MqttConfig) -> TlsFiles | None:
    """The config's TLS files, read (None when TLS is off)."""
    return TlsFiles(config.tls) if config.tls.enabled else None


def make_client(
    config: MqttConfig,
    client_id: str,
    protocol: int | None = None,
    clean_session: bool | None = None,
    tls: TlsFiles | None = None,
) -> mqtt.Client:
    """A configured, not yet connected paho client. ``tls`` reuses TLS files already read. An exception in a
    callback is logged by paho and the network thread goes on: it would otherwise end the thread, and
    with it every reconnect, without a word."""
    protocol = PROTOCOLS[config.protocol] if protocol is None else protocol
    options = {"clean_session": clean_session} if clean_session is not None and protocol != mqtt.MQTTv5 else {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **options)
    client.enable_logger(logging.getLogger("paho"))
    client.suppress_exceptions = True
    client.on_socket_open = _no_delay
    if config.username:
        client.username_pw_set(config.username, config.password())
    tls = tls or tls_files(config)
    if tls is not None:
        client.tls_set_context(tls.context)
        client.on_pre_connect = tls.read_again
    client.on_connect_fail = FailOver(config, client_id)  # paho's own reconnects go round mqtt.brokers
    return client


def connect_first(client: mqtt.Client, config: MqttConfig) -> None:
    """Connect now to the first broker of ``mqtt.host`` and ``mqtt.brokers`` that answers; SmartbinError naming
    the last one and why when none does."""
    addresses = config.addresses()
    for number, (host, port) in enumerate(addresses, 1):
        try:
            client.connect(host, port, config.keepalive)
            return
        except OSError as exc:
            if number == len(addresses):
                raise SmartbinError(f"cannot reach the broker at {host}:{port}: {exc}") from None
            log.warning("broker %s:%d cannot be reached: trying the next of mqtt.brokers", host, port)


class FailOver:
    """paho retries the broker it was given; with ``mqtt.brokers`` a failed connect moves on to the next address
    in turn (a cluster's other nodes). Set as a client's ``on_connect_fail``; ``current`` is where to connect.

    Each address has a client id of its own (the configured one on the first, ``<id>-<n>`` on the n-th): RabbitMQ
    keeps a client's subscriptions in a queue on the node it connected to, named after its client id, and while
    that node is down it refuses the same id on every other node (measured: for minutes, whatever the session)."""

    def __init__(self, config: MqttConfig, client_id: str):
        self.addresses, self.index, self.base_id = config.addresses(), 0, client_id

    def current(self) -> tuple[str, int]:
        return self.addresses[self.index]

    def client_id(self) -> str:
        """The client id for the current address."""
        return self.base_id if self.index == 0 or not self.base_id else f"{self.base_id}-{self.index}"

    def __call__(self, client: mqtt.Client, userdata=None) -> None:
        if len(self.addresses) > 1:
            failed = self.current()
            self.index = (self.index + 1) % len(self.addresses)
            # paho's setters refuse while it is "connecting", which it still is when a connect failed; its retry
            # reads these (tests/broker/test_rabbitmq_cluster.py fails if that changes)
            client._host, client._port = self.current()
            client._client_id = self.client_id().encode("utf-8")
            log.warning("broker %s:%d cannot be reached: trying %s:%d", *failed, *self.current())


def _no_delay(client: mqtt.Client, userdata, sock) -> None:
    """Send each message at once. paho leaves Nagle's algorithm on: with the CPU busy with inference, a
    small publish then waits for the broker's delayed ACK of the one before (measured: +15 ms per message
    at 150 messages/s on 2 cores, 0.5 ms with TCP_NODELAY)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a proxy or a test double): nothing to tune
        log.debug("TCP_NODELAY not set", exc_info=True)


def start_subscriber(
    config: MqttConfig, client_id: str, topic: str | list[tuple[str, int]], on_message, qos: int = 0
) -> tuple[mqtt.Client, threading.Event]:
    """A connected client (network loop started) that subscribes to ``topic`` (or a list of (topic, qos)) on
    every connect; the event is set once the broker has granted the first subscription. Under ``protocol: auto``
    a broker that drops an MQTT 5 CONNECT or leaves it unanswered (RabbitMQ 3.x) is spoken to in MQTT 3.1.1."""
    protocol = mqtt.MQTTv5 if config.protocol == "auto" else None
    client, subscribed, answer = _subscriber(config, client_id, topic, on_message, qos, protocol)
    if protocol is None or (answer.wait(V5_ANSWER_TIMEOUT_S) and client.is_connected()):
        return client, subscribed
    client.loop_stop()
    client.disconnect()
    log.info("the broker at %s:%d does not answer MQTT 5: MQTT 3.1.1 it is", client.host, client.port)
    client, subscribed, _ = _subscriber(config, client_id, topic, on_message, qos, mqtt.MQTTv311)
    return client, subscribed


def _subscriber(config: MqttConfig, client_id: str, topic, on_message, qos: int, protocol: int | None):
    """start_subscriber's client in ``protocol``; the second event is set at its first CONNACK or drop."""
    client = make_client(config, client_id, protocol)
    subscribed, answer = threading.Event(), threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        answer.set()
        client.subscribe(topic, qos=qos)

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: answer.set()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    connect_first(client, config)
    client.loop_start()
    return client, subscribed, answer
