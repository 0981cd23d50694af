"""`smartbin fleet-sim`: N simulated bins (real MQTT client and outbox code, scripted decisions) against one
broker; reports message rate, latency percentiles and the count of lost messages."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable

from edge.broker.client import start_subscriber
from edge.broker.publisher import Publisher
from edge.config import MqttConfig
from edge.errors import SmartbinError
from edge.formats.labels import BINS
from edge.stats import percentiles
from edge.storage.outbox import Outbox
from edge.wire.payloads import Decision, Routing
from edge.wire.topics import Topic, device_base, every_bin

MAX_BINS = 300
MAINTAIN_EVERY_S = 0.2


class SimulatedBin:
    def __init__(self, index: int, config: MqttConfig):
        """Bin ``sim-<index>`` on the broker(s) of ``config``."""
        self.device_id = f"sim-{index:04d}"
        # In-memory SQLite: the same outbox code without three file descriptors per bin. paho waits on
        # select(), which cannot watch descriptors above 1023, so one process simulates at most ~300 bins.
        self.outbox = Outbox(":memory:")
        self.publisher = Publisher(
            config,
            device_base(config.topic_prefix, self.device_id),
            self.device_id,
            self.outbox,
            on_command=lambda payload, retained: None,
            status=self.status,
        )
        self.sent = 0

    def status(self, state: str) -> dict:
        return {"state": state, "device_id": self.device_id, "ts": time.time()}

    def decide(self) -> None:
        self.publisher.publish_decision(
            Decision(
                event_id=uuid.uuid4().hex,
                ts=time.time(),
                device_id=self.device_id,
                bin=random.choice(BINS),
                label="simulated",
                label_index=0,
                confidence=0.9,
                votes=5,
                frames=5,
                reason="vote",
            ).dump()
        )
        self.sent += 1


class Collector:
    """Every bin's decisions, de-duplicated on event_id as a real subscriber does, with their latency."""

    def __init__(self, config: MqttConfig):
        self.received: dict[str, float] = {}
        self.latencies: list[float] = []
        self.duplicates = 0
        self.lock = threading.Lock()
        self.client, subscribed = start_subscriber(
            config, "fleet-collector", every_bin(config.topic_prefix, Topic.DECISION), self._on, qos=Topic.DECISION.qos
        )
        subscribed.wait(10)

    def _on(self, client, userdata, message) -> None:
        decision = Routing.read(message.payload)
        with self.lock:
            if decision.event_id in self.received:
                self.duplicates += 1
                return
            self.received[decision.event_id] = time.time()
            self.latencies.append((time.time() - decision.ts) * 1e3)

    def wait_for(self, sent: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < sent and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drive(
    fleet: list[SimulatedBin], duration: float, rate_per_bin: float, tick: Callable[[], None] = lambda: None
) -> float:
    """Each bin decides at random times, ``rate_per_bin`` a second on average, and keeps its connection up (the
    daemon's loop calls ``maintain``); ``tick`` after each round. Returns the seconds it ran."""
    started = maintained = time.monotonic()
    rng = random.Random(0)
    next_at = [started + rng.uniform(0, 1 / rate_per_bin) for _ in fleet]
    while time.monotonic() - started < duration:
        now = time.monotonic()
        for i, simulated in enumerate(fleet):
            if now >= next_at[i]:
                simulated.decide()
                next_at[i] = now + rng.expovariate(rate_per_bin)
        if now - maintained >= MAINTAIN_EVERY_S:  # a protocol fallback, a will: a daemon does it every frame
            maintained = now
            for simulated in fleet:
                simulated.publisher.maintain()
        tick()
        time.sleep(0.005)
    return time.monotonic() - started


def run_fleet(bins: int, duration: float, host: str, port: int, rate_per_bin: float = 0.5) -> dict:
    """Each bin decides about ``rate_per_bin`` times a second for ``duration`` seconds; then all drain."""
    if bins > MAX_BINS:
        raise SmartbinError(f"--devices {bins}: one process simulates at most {MAX_BINS} bins (paho's select() limit)")
    config = MqttConfig(host=host, port=port, metrics_interval_s=3600)
    collector = Collector(config)
    fleet = [SimulatedBin(i, config) for i in range(bins)]
    for simulated in fleet:
        simulated.publisher.start()
    connect_deadline = time.monotonic() + 30
    while time.monotonic() < connect_deadline and not all(b.publisher.connected.is_set() for b in fleet):
        time.sleep(0.05)
    elapsed = drive(fleet, duration, rate_per_bin)
    left = sum(simulated.publisher.stop(timeout=10) for simulated in fleet)
    sent = sum(simulated.sent for simulated in fleet)
    collector.wait_for(sent, 10)
    collector.close()
    received = len(collector.received)
    return {
        "bins": bins,
        "duration_s": round(elapsed, 1),
        "sent": sent,
        "received": received,
        "duplicates_removed": collector.duplicates,
        "left_in_outboxes": left,
        "lost": sent - received,
        "rate_per_s": round(received / elapsed, 1),
        "latency_ms": percentiles(collector.latencies, digits=1) or dict.fromkeys(("p50", "p90", "p99"), float("nan")),
    }


def format_report(r: dict) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['bins']} bins for {r['duration_s']} s: sent {r['sent']}, received {r['received']} "
        f"({r['rate_per_s']}/s), duplicates removed {r['duplicates_removed']}, "
        f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
        f"still in outboxes {r['left_in_outboxes']}\nlost: {r['lost']}"
    )
