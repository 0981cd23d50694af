"""The one MQTT client factory: what every client of ours gets, checked on a real connection."""

from __future__ import annotations

import socket
import threading

from edge.config import MqttConfig
from edge.service.mqtt_client import make_client


def test_clients_send_without_nagles_delay(broker):
    """Under inference load, Nagle's algorithm held each small publish for the broker's delayed ACK (+15 ms)."""
    client = make_client(MqttConfig(host="127.0.0.1", port=broker.port), "nodelay-test")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert connected.wait(10)
        assert client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.disconnect()
        client.loop_stop()
