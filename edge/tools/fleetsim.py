"""`smartbin fleet-sim`: N simulated bins (real MQTT client and outbox code, scripted decisions) against one
broker; reports message rate, latency percentiles and the count of lost messages."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid

from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.labels import BINS
from edge.service.mqtt import Publisher
from edge.service.mqtt_client import make_client
from edge.service.outbox import Outbox
from edge.stats import percentiles

MAX_BINS = 300


class SimulatedBin:
    def __init__(self, index: int, host: str, port: int):
        self.device_id = f"sim-{index:04d}"
        # In-memory SQLite: the same outbox code without three file descriptors per bin. paho waits on
        # select(), which cannot watch descriptors above 1023, so one process simulates at most ~300 bins.
        self.outbox = Outbox(":memory:")
        config = MqttConfig(host=host, port=port, metrics_interval_s=3600)
        self.publisher = Publisher(
            config,
            f"smartbin/{self.device_id}",
            self.device_id,
            self.outbox,
            on_command=lambda payload: None,
            status=self.status,
        )
        self.sent = 0

    def status(self, state: str) -> dict:
        return {"state": state, "device_id": self.device_id, "ts": time.time()}

    def decide(self) -> None:
        self.publisher.publish_decision(
            {
                "event_id": uuid.uuid4().hex,
                "ts": time.time(),
                "device_id": self.device_id,
                "bin": random.choice(BINS),
                "label": "simulated",
                "label_index": 0,
                "confidence": 0.9,
                "votes": 5,
                "frames": 5,
                "reason": "vote",
            }
        )
        self.sent += 1


def run_fleet(bins: int, duration: float, host: str, port: int, rate_per_bin: float = 0.5) -> dict:
    """Each bin decides about ``rate_per_bin`` times a second for ``duration`` seconds; then all drain."""
    if bins > MAX_BINS:
        raise SmartbinError(f"--bins {bins}: one process simulates at most {MAX_BINS} bins (paho's select() limit)")
    received: dict[str, float] = {}
    latencies: list[float] = []
    duplicates = 0
    lock = threading.Lock()

    def on_message(client, userdata, message):
        nonlocal duplicates
        payload = json.loads(message.payload)
        with lock:
            if payload["event_id"] in received:
                duplicates += 1
                return
            received[payload["event_id"]] = time.time()
            latencies.append((time.time() - payload["ts"]) * 1e3)

    collector = make_client(MqttConfig(host=host, port=port), "fleet-collector")
    subscribed = threading.Event()
    collector.on_connect = lambda c, u, f, rc, p: c.subscribe("smartbin/+/decision", qos=1)
    collector.on_subscribe = lambda *a: subscribed.set()
    collector.on_message = on_message
    collector.connect(host, port)
    collector.loop_start()
    subscribed.wait(10)
    fleet = [SimulatedBin(i, host, port) for i in range(bins)]
    for simulated in fleet:
        simulated.publisher.start()
    connect_deadline = time.monotonic() + 30
    while time.monotonic() < connect_deadline and not all(b.publisher.connected.is_set() for b in fleet):
        time.sleep(0.05)
    started = time.monotonic()
    rng = random.Random(0)
    next_at = [started + rng.uniform(0, 1 / rate_per_bin) for _ in fleet]
    while time.monotonic() - started < duration:
        now = time.monotonic()
        for i, simulated in enumerate(fleet):
            if now >= next_at[i]:
                simulated.decide()
                next_at[i] = now + rng.expovariate(rate_per_bin)
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    left = sum(simulated.publisher.stop(timeout=10) for simulated in fleet)
    sent = sum(simulated.sent for simulated in fleet)
    deadline = time.monotonic() + 10
    while len(received) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    collector.disconnect()
    collector.loop_stop()
    return {
        "bins": bins,
        "duration_s": round(elapsed, 1),
        "sent": sent,
        "received": len(received),
        "duplicates_removed": duplicates,
        "left_in_outboxes": left,
        "lost": sent - len(received),
        "rate_per_s": round(len(received) / elapsed, 1),
        "latency_ms": percentiles(latencies, digits=1) or dict.fromkeys(("p50", "p90", "p99"), float("nan")),
    }


def format_report(r: dict) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['bins']} bins for {r['duration_s']} s: sent {r['sent']}, received {r['received']} "
        f"({r['rate_per_s']}/s), duplicates removed {r['duplicates_removed']}, "
        f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
        f"still in outboxes {r['left_in_outboxes']}\nlost: {r['lost']}"
    )
