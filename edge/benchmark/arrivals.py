"""The e2e bench's subscriber, in a process of its own as an actuator is: it timestamps each frame's
…/classification as it arrives (the monotonic clock is the host's, the same in every process), without
sharing the daemon's interpreter lock. In the bench's process it added ~0.4 ms to the broker hop."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from edge.config import MqttConfig

READY_TIMEOUT_S = 30


@dataclass
class Heard:
    """Per frame id: the arrival time (monotonic s), and the capture-to-publish and inference ms it carried."""

    at: dict[int, float] = field(default_factory=dict)
    to_publish: dict[int, float] = field(default_factory=dict)
    infer_ms: dict[int, float] = field(default_factory=dict)


class Arrivals:
    """``Arrivals(settings, topic, wanted)``: subscribed once ``ready``; ``heard(timeout)`` stops it once
    ``wanted`` messages came or ``timeout`` passed, and gives what it heard."""

    def __init__(self, settings: MqttConfig, topic: str, wanted: int):
        context = multiprocessing.get_context("spawn")  # the daemon's threads are not forked along
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_listen, args=(settings, topic, wanted, child), daemon=True)
        self.process.start()
        self.ready = self.conn.poll(READY_TIMEOUT_S) and self.conn.recv() == "subscribed"

    def heard(self, timeout: float) -> Heard:
        if not self.conn.poll(timeout):
            self.conn.send("stop")
        heard = self.conn.recv()
        self.process.join(10)
        return heard


def _listen(settings: MqttConfig, topic: str, wanted: int, conn: Connection) -> None:
    from edge.broker.client import start_subscriber
    from edge.wire.payloads import Classification

    heard = Heard()

    def on_message(client, userdata, message) -> None:
        now = time.monotonic()
        classification = Classification.model_validate_json(message.payload)
        frame_id = classification.frame_id
        heard.at[frame_id] = now
        heard.to_publish[frame_id] = classification.latency_ms.capture_to_publish
        heard.infer_ms[frame_id] = classification.latency_ms.infer

    client, subscribed = start_subscriber(settings, f"smartbin-bench-{multiprocessing.current_process().pid}",
                                          topic, on_message)  # fmt: skip
    conn.send("subscribed" if subscribed.wait(READY_TIMEOUT_S) else "not subscribed")
    while len(heard.at) < wanted and not conn.poll(0.05):
        pass
    client.disconnect()
    client.loop_stop()
    conn.send(heard)
