"""The one place an MQTT client is made: protocol, credentials, TLS, logging; mistakes are config errors.

The daemon's publisher, the actuator and the fleet simulator all connect through ``make_client``,
so a TLS option or a key passphrase works the same in each of them.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttConfig, TlsConfig
from edge.errors import ConfigError, FilesUnavailable, SmartbinError

log = logging.getLogger(__name__)

RENEWAL_S = 300.0  # files this new that do not load may be a renewal half-way: tried again, not refused for good
UNSUPPORTED_PROTOCOL = 132  # CONNACK reason (MQTT 5): the broker speaks only MQTT 3.1.1


def refuses_mqtt5(reason_code: mqtt.ReasonCode) -> bool:
    """A CONNACK that says the broker does not speak MQTT 5 (3.1.1's "unacceptable protocol version", 1, or
    MQTT 5's 0x84): a refusal in so many words, unlike a silence."""
    return reason_code.value in (1, UNSUPPORTED_PROTOCOL)


PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5, "auto": mqtt.MQTTv5}  # auto: 5 first, then 3.1.1


class TlsFiles:
    """The TLS context a config asks for, its files read again when they change, before every connect: a
    fleet on short-lived client certificates reconnects with the renewed one. A CA file that changes adds
    its certificates to those trusted (OpenSSL keeps the ones read before until the next start)."""

    def __init__(self, tls: TlsConfig):
        self.tls = tls
        self._loaded: tuple | None = None  # the files' identity (inode, size, mtime) when last read
        try:
            self.context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the CA, certificate or key: {exc}") from exc
        self.context.check_hostname = tls.check_hostname
        self.refresh()

    @staticmethod
    def _missing(exc: OSError) -> FilesUnavailable:
        return FilesUnavailable(f"mqtt.tls: {exc.filename or 'a file'} is missing (a certificate renewal?)")

    def _identity(self) -> tuple:
        files = [f for f in (self.tls.ca_file, self.tls.cert_file, self.tls.key_file) if f is not None]
        try:
            return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files))
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc

    def refresh(self) -> bool:
        """Read the files again when they changed since the last read; True when they did. FilesUnavailable
        when one is missing (waiting fixes that), ConfigError when one does not load (a wrong passphrase)."""
        identity = self._identity()
        if identity == self._loaded:
            return False
        tls = self.tls
        try:
            if tls.ca_file and self._loaded is not None:
                self.context.load_verify_locations(cafile=str(tls.ca_file))
            if tls.cert_file:
                password = os.environ.get(tls.key_password_env) if tls.key_password_env else None
                self.context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=password)
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            # A pair that does not match or a PEM cut short may be a renewal caught half-way (the certificate
            # written, not yet its key): while the files are that new, a restart after the back-off may find
            # them whole (exit 75). Older, it is the config's: keep the cause, "wrong password", "no such
            # file" and "PEM lib" each need a different fix (exit 78).
            changed_s = time.time() - max((st[2] / 1e9 for st in identity), default=0.0)
            if 0 <= changed_s < RENEWAL_S and self._half_renewed(exc):
                raise FilesUnavailable(
                    f"mqtt.tls: the certificate files changed {changed_s:.0f} s ago and do not load ({exc}): "
                    "a renewal half-way? trying again"
                ) from exc
            raise ConfigError(f"mqtt.tls: cannot load the CA, certificate or key: {exc}") from exc
        self._loaded = identity
        return True

    def _half_renewed(self, exc: BaseException) -> bool:
        """A certificate and key that do not match, or a PEM file cut short: what a renewal leaves half-way (a
        wrong passphrase on a whole file is neither)."""
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return True
        for path in (p for p in (self.tls.ca_file, self.tls.cert_file, self.tls.key_file) if p is not None):
            try:
                text = Path(path).read_bytes()
            except OSError:
                return True
            if text.count(b"-----BEGIN ") != text.count(b"-----END ") or b"-----END " not in text:
                return True
        return False

    def read_again(self, *_paho) -> None:
        """Before every connect and reconnect (paho's on_pre_connect), and at a reload: the files as they
        are now; a problem is logged and the files read before stay in use."""
        try:
            if self.refresh():
                log.info("mqtt.tls: the certificate files changed; connecting with the new ones")
        except SmartbinError as exc:  # half-way through a renewal: the next reconnect tries again
            log.warning("%s; connecting with the ones read before", exc)


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
    return client


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
    every connect; the event is set once the broker has granted the first subscription."""
    client = make_client(config, client_id)
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=qos)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(config.host, config.port, config.keepalive)
    client.loop_start()
    return client, subscribed
