"""An independent MQTT subscriber for tests: collects every message it sees."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float = 0.0  # time.monotonic() on arrival

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    def __init__(self, port: int, topic: str = "smartbin/#", client_id: str | None = None, persistent: bool = False):
        """``persistent`` (with a ``client_id``): a session the broker keeps, so nothing is missed while
        the broker restarts or the subscriber reconnects."""
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        session = {"clean_session": False} if persistent else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", **session)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(
                Message(message.topic, message.payload, bool(message.retain), message.qos, time.monotonic())
            )

    def on(self, suffix: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/" + suffix)]

    def wait_for(self, suffix: str, count: int = 1, timeout: float = 20.0, where=lambda m: True) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.on(suffix) if where(m)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return [m for m in self.on(suffix) if where(m)]

    def wait_decisions(self, count: int, timeout: float = 20.0) -> list[dict]:
        """At least ``count`` distinct decisions (QoS 1 may deliver one twice), de-duplicated, in arrival order."""
        deadline = time.monotonic() + timeout
        while len(found := unique_decisions(self.on("decision"))) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def unique_decisions(messages: list[Message]) -> list[dict]:
    """What a subscriber keeps after de-duplicating on event_id, in arrival order."""
    seen: set[str] = set()
    out = []
    for m in messages:
        d = m.json()
        if d["event_id"] not in seen:
            seen.add(d["event_id"])
            out.append(d)
    return out


def answered(sub: Subscriber, command_id: str, timeout: float = 60) -> dict:
    """The first answer to a command on …/command/result."""
    found = sub.wait_for("command/result", timeout=timeout, where=lambda m: m.json().get("id") == command_id)
    assert found, f"no answer to {command_id}"
    return found[0].json()
