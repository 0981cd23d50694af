"""What the decisions' forwarder and the samples' sender share: rows of an on-disk queue sent over a connection,
known by paho's message id until their PUBACK, sent again from the queue after a reconnect."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt

from edge.broker.client import forget_resends


class InFlight:
    """paho message id -> queue row, the last row sent on this connection, and the PUBACKs paho reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop sends, paho's thread reconnects
        self._inflight: dict[int, int] = {}  # paho mid -> queue row
        self._sent_upto = 0
        self._acks: queue.SimpleQueue[tuple[int, mqtt.ReasonCode | None]] = queue.SimpleQueue()

    def reconnected(self, client: mqtt.Client) -> None:
        """A new connection: paho's copies of what was in flight are dropped (a decision's carry the age it had
        when first sent), and the queue goes again from its first row."""
        with self._lock:
            forget_resends(client, set(self._inflight))
            self._inflight.clear()
            self._sent_upto = 0

    def acked(self, mid: int, reason: mqtt.ReasonCode | None) -> None:
        """paho's thread: only queued here (paho holds its own message lock while calling this: never take ours)."""
        self._acks.put((mid, reason))
