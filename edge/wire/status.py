"""The narrow status view: what the bin is running and how it is doing, as one immutable snapshot.

The daemon builds it on its loop and posts it to a ``StatusBoard``; the MQTT status (paho's thread: at
each connect, and the Last Will) and metrics messages, the status page, /healthz and /metrics only
read the newest one. None of them sees the daemon itself or calls into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.wire.payloads import Metrics, Status


def cpu_temperature() -> float | None:
    """°C from the first thermal zone (Pi, Jetson, most Linux boards), or None."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class StatusView:
    device_id: str
    version: str
    host: str
    started: float
    ts: float
    model: dict  # name, variant, sha256
    backend: str
    delegate: str | None
    health: str  # ok | degraded | camera_lost
    source: dict  # uri, state, error
    paused: bool
    fps: float
    frames_classified: int
    frames_grabbed: int
    frames_dropped: int
    decisions: int
    latency_ms: dict
    latency_histograms: dict  # stage -> ([(le seconds, cumulative count)], sum seconds), for Prometheus
    outbox_depth: int
    outbox_dropped: int
    outbox_error: str | None
    outbox_refused: int  # decisions the broker refused (MQTT 5 PUBACK reason >= 0x80), each kept and offered again
    outbox_refusal: str | None  # the last refusal's reason while refusals last
    source_reconnects: int
    broker_connected: bool
    broker_connects: int
    mqtt_protocol: str  # "5" or "3.1.1": a decision's age travels without clocks over 5 only
    commands_rejected: int
    cpu_temp_c: float | None
    samples: dict | None = None  # the sample store's counts (kept, bytes, written, dropped, ...)
    counts: dict | None = None  # items per bin and label, today and in all (edge/storage/counters.py)
    presence: dict | None = None  # state (empty, item, learning), re-learns and the last one's reason
    pick: dict | None = None  # model.variant auto: the choice and its trials (edge/models/pick.py)

    @property
    def uptime_s(self) -> float:
        return round(self.ts - self.started, 1)


class StatusBoard:
    """The newest ``StatusView``: posted by the loop, read from any thread (a reference swap)."""

    def __init__(self) -> None:
        self._view: StatusView | None = None

    def post(self, view: StatusView) -> None:
        self._view = view

    def view(self) -> StatusView:
        """The newest view; the loop posts one before anything can read it (the daemon's ``start``)."""
        if self._view is None:
            raise RuntimeError("no status view posted yet")
        return self._view

    def status(self, state: str = "online") -> dict:
        """The retained …/status message from the newest view."""
        return status_payload(self.view(), state)


def status_payload(view: StatusView, state: str = "online") -> dict:
    """The retained …/status message (also the Last Will, with state offline)."""
    return Status(
        state=state,
        device_id=view.device_id,
        version=view.version,
        model=view.model,
        backend=view.backend,
        delegate=view.delegate,
        health=view.health,
        source=view.source,
        presence=view.presence,
        paused=view.paused,
        host=view.host,
        mqtt_protocol=view.mqtt_protocol,
        started=round(view.started, 3),
        ts=round(view.ts, 3),
    ).dump()


def metrics_payload(view: StatusView) -> dict:
    """The periodic …/metrics message, and the figures of the status page."""
    return Metrics(
        ts=round(view.ts, 3),
        fps=view.fps,
        frames_classified=view.frames_classified,
        frames_grabbed=view.frames_grabbed,
        frames_dropped=view.frames_dropped,
        decisions=view.decisions,
        latency_ms=view.latency_ms,
        outbox_depth=view.outbox_depth,
        outbox_dropped=view.outbox_dropped,
        outbox_error=view.outbox_error,
        outbox_refused=view.outbox_refused,
        outbox_refusal=view.outbox_refusal,
        source_state=view.source["state"],
        source_reconnects=view.source_reconnects,
        broker_connects=view.broker_connects,
        mqtt_protocol=view.mqtt_protocol,
        commands_rejected=view.commands_rejected,
        cpu_temp_c=view.cpu_temp_c,
        uptime_s=view.uptime_s,
        health=view.health,
        presence=view.presence,
        samples=view.samples,
        counts=view.counts,
    ).dump()


def prometheus_registry(view: Callable[[], StatusView]):
    """Prometheus metrics read from the view at scrape time (no work on the hot path), named and in base units
    by Prometheus's conventions: latency as histograms in seconds, ``smartbin_build_info``, process metrics."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class Collector:
        def collect(self):
            v = view()
            yield CounterMetricFamily("smartbin_frames_classified", "Frames classified", v.frames_classified)
            yield CounterMetricFamily("smartbin_frames_dropped", "Frames grabbed but skipped", v.frames_dropped)
            yield CounterMetricFamily("smartbin_decisions", "Decisions made", v.decisions)
            yield GaugeMetricFamily("smartbin_fps", "Classified frames per second", v.fps)
            yield GaugeMetricFamily("smartbin_outbox_depth", "Decisions waiting for the broker", v.outbox_depth)
            yield CounterMetricFamily("smartbin_outbox_refused", "Decisions the broker refused", v.outbox_refused)
            yield GaugeMetricFamily("smartbin_up", "1 when healthy", 1.0 if v.health == "ok" else 0.0)
            latency = HistogramMetricFamily(
                "smartbin_latency_seconds", "Latency of a stage since the start", labels=["stage"]
            )
            for stage, (buckets, total) in v.latency_histograms.items():
                latency.add_metric([stage], buckets, total)
            yield latency
            build = GaugeMetricFamily(
                "smartbin_build_info",
                "What runs (always 1)",
                labels=["version", "model", "variant", "backend", "mqtt_protocol"],
            )
            model, variant = str(v.model.get("name", "")), str(v.model.get("variant", ""))
            build.add_metric([v.version, model, variant, v.backend, v.mqtt_protocol], 1)
            yield build
            if v.pick:
                yield pick_metrics(v.pick)
            if v.cpu_temp_c is not None:
                yield GaugeMetricFamily("smartbin_cpu_temperature_celsius", "CPU temperature", v.cpu_temp_c)
            if v.counts:
                total = CounterMetricFamily(
                    "smartbin_items", "Items sorted, per bin (outlives restarts)", labels=["bin"]
                )
                day = GaugeMetricFamily("smartbin_items_today", "Items sorted today, per bin", labels=["bin"])
                for bin_name, n in v.counts["total"]["per_bin"].items():
                    total.add_metric([bin_name], n)
                    day.add_metric([bin_name], v.counts["today"]["per_bin"][bin_name])
                yield total
                yield day
                yield GaugeMetricFamily(
                    "smartbin_low_confidence_share_today",
                    "Share of today's decisions below min_confidence (a drift signal)",
                    v.counts["today"]["low_confidence_share"],
                )

    registry = CollectorRegistry()
    registry.register(Collector())
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, open fds: what a soak watches
    PlatformCollector(registry=registry)  # python_info
    return registry


def pick_metrics(pick: dict):
    """model.variant auto's figures (a GaugeMetricFamily): each passing trial's median invoke, the chosen one
    marked."""
    from prometheus_client.core import GaugeMetricFamily

    picked = GaugeMetricFamily(
        "smartbin_pick_invoke_seconds",
        "model.variant auto: one image's invoke, median, per variant, backend and threads tried",
        labels=["variant", "backend", "threads", "chosen"],
    )
    chosen = pick["chosen"] or {}
    for t in (t for t in pick["trials"] if t["passed"]):
        mine = all(t[k] == chosen.get(k) for k in ("variant", "backend", "threads"))
        picked.add_metric([t["variant"], t["backend"], str(t["threads"]), str(mine).lower()], t["p50_ms"] / 1e3)
    return picked
