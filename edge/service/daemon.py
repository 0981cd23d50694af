"""`smartbin run`: camera -> preprocess -> engine -> decision -> MQTT, for months, under systemd.

Everything happens in the main loop except capture (its own thread) and MQTT I/O (paho's
thread): commands are queued and carried out between frames, so a reload never races
an inference, and watchdog pings prove that a whole cycle really ran.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import signal
import socket
import threading
import time
from collections import deque
from pathlib import Path

from edge import __version__
from edge.bundle import Bundle
from edge.classifier import Classifier, Prediction
from edge.config import Config, load_config
from edge.errors import SmartbinError
from edge.images import encode_jpeg
from edge.service.commands import Command, CommandError, parse_command
from edge.service.mqtt import Publisher
from edge.service.notify import Notifier
from edge.service.outbox import Outbox, OutboxError
from edge.service.queues import drain
from edge.sources import Capture, Frame, open_source
from edge.stats import percentiles
from edge.vision.decision import Decider, Decision, DecisionConfig, PresenceDetector

log = logging.getLogger(__name__)

COMMAND_QUEUE = 64
LATENCY_WINDOW = 500
FPS_WINDOW_S = 5.0


def cpu_temperature() -> float | None:
    """°C from the first thermal zone (Pi, Jetson, most Linux boards), or None."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000
    except (OSError, ValueError):
        return None


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None):
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.started = time.time()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.paused = False
        self.commands: queue.Queue[bytes] = queue.Queue(COMMAND_QUEUE)
        self.classifier = self._load_classifier(config)
        self.capture = self._make_capture(config)
        self.presence = self._make_presence(config)
        self.decider = Decider(self.classifier.labels, self._decision_config(config))
        self.outbox_open_error: str | None = None  # sticky: the configured file could not be opened
        try:
            self.outbox = Outbox(config.outbox.path, config.outbox.max_items)
        except OutboxError as exc:
            # Keep sorting: decisions still go out, only the power-cut guarantee is lost (and reported).
            self.outbox_open_error = f"{exc}; decisions are kept in memory only"
            log.error("%s", self.outbox_open_error)
            self.outbox = Outbox(":memory:", config.outbox.max_items)
        self.outbox_error = self.outbox_open_error
        self.last_frame: Frame | None = None
        self.last_healthy = time.monotonic()
        self.publisher = Publisher(
            config.mqtt, config.topic_base, config.device_id, self.outbox, self._on_command, self.status_payload
        )
        self.latency: dict[str, deque] = {k: deque(maxlen=LATENCY_WINDOW) for k in ("infer", "total")}
        self.classified = 0
        self.decisions = 0
        self.commands_rejected = 0
        self._metrics_due = time.monotonic() + config.mqtt.metrics_interval_s
        self.classified_at: deque[float] = deque(maxlen=1000)
        self._health_reported = "ok"
        self.web_state = None
        self.web = None
        self.prometheus = None
        if config.web.enabled:
            from edge.service.web import WebServer, WebState, answer_classify_requests

            self.answer_web = answer_classify_requests  # imported once, not on every loop
            self.web_state = WebState()
            self.prometheus = self._prometheus_registry()
            self.web = WebServer(self, self.web_state)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _load_classifier(config: Config, bundle_path: Path | None = None) -> Classifier:
        m = config.model
        roi = config.source.roi.to_roi() if config.source.roi else None
        return Classifier(bundle_path or m.bundle, m.backend, m.variant, m.threads, m.delegate, roi, m.top_k)

    @staticmethod
    def _make_capture(config: Config) -> Capture:
        uri = config.source.uri
        return Capture(
            lambda: open_source(uri),
            frozen_after_s=config.source.frozen_after_s,
            backoff_s=(0.5, config.source.reconnect_max_s),
        )

    @staticmethod
    def _make_presence(config: Config) -> PresenceDetector | None:
        p = config.presence
        if p.mode == "always":
            return None
        return PresenceDetector(p.pixel_threshold, p.area_fraction, warmup_frames=p.warmup_frames)

    @staticmethod
    def _decision_config(config: Config) -> DecisionConfig:
        return config.decision.model_copy()  # set_threshold changes the running vote, not the loaded config

    # ------------------------------------------------------------------ state for messages
    def health(self) -> str:
        stalled = time.monotonic() - self.last_healthy > self.config.source.stall_timeout_s
        if self.capture.health.state == "reconnecting" or self.outbox_error or stalled:
            return "degraded"
        return "ok"

    def status_payload(self, state: str = "online") -> dict:
        bundle = self.classifier.bundle
        engine = self.classifier.engine
        variant = bundle.manifest.variants[engine.variant]
        return {
            "state": state,
            "device_id": self.config.device_id,
            "version": __version__,
            "model": {"name": bundle.manifest.name, "variant": engine.variant, "sha256": variant.sha256},
            "backend": engine.backend,
            "delegate": engine.delegate,
            "health": self.health(),
            "source": {
                "uri": self.config.source.uri,
                "state": self.capture.health.state,
                "error": self.capture.health.error,
            },
            "paused": self.paused,
            "host": socket.gethostname(),
            "started": round(self.started, 3),
            "ts": round(time.time(), 3),
        }

    def fps(self) -> float:
        """Classified frames per second over the last FPS_WINDOW_S seconds."""
        now = time.monotonic()
        recent = [t for t in self.classified_at if now - t <= FPS_WINDOW_S]
        return round(len(recent) / FPS_WINDOW_S, 2)

    def metrics_payload(self) -> dict:
        """Figures for …/metrics and the status page."""
        grabbed = self.capture.health.grabbed
        return {
            "ts": round(time.time(), 3),
            "fps": self.fps(),
            "frames_classified": self.classified,
            "frames_grabbed": grabbed,
            "frames_dropped": max(0, grabbed - self.capture.health.frames),
            "decisions": self.decisions,
            "latency_ms": {k: percentiles(v, digits=2) for k, v in self.latency.items()},
            "outbox_depth": self.outbox.depth(),
            "outbox_dropped": self.outbox.dropped(),
            "outbox_error": self.outbox_error,
            "source_state": self.capture.health.state,
            "source_reconnects": self.capture.health.reconnects,
            "broker_connects": self.publisher.connects,
            "commands_rejected": self.commands_rejected,
            "cpu_temp_c": cpu_temperature(),
            "uptime_s": round(time.time() - self.started, 1),
            "health": self.health(),
        }

    def _prometheus_registry(self):
        """Prometheus metrics read from the daemon's state at scrape time (no work on the hot path)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        daemon = self

        class Collector:
            def collect(self):
                m = daemon.metrics_payload()
                yield CounterMetricFamily("smartbin_frames_classified", "Frames classified", m["frames_classified"])
                yield CounterMetricFamily("smartbin_frames_dropped", "Frames grabbed but skipped", m["frames_dropped"])
                yield CounterMetricFamily("smartbin_decisions", "Decisions made", m["decisions"])
                yield GaugeMetricFamily("smartbin_fps", "Classified frames per second", m["fps"])
                yield GaugeMetricFamily("smartbin_outbox_depth", "Decisions waiting for the broker", m["outbox_depth"])
                yield GaugeMetricFamily("smartbin_up", "1 when healthy", 1.0 if m["health"] == "ok" else 0.0)
                latency = GaugeMetricFamily("smartbin_latency_ms", "Latency percentiles", labels=["stage", "quantile"])
                for stage, figures in m["latency_ms"].items():
                    for quantile, value in figures.items():
                        latency.add_metric([stage, quantile], value)
                yield latency
                if m["cpu_temp_c"] is not None:
                    yield GaugeMetricFamily("smartbin_cpu_temperature_celsius", "CPU temperature", m["cpu_temp_c"])

        registry = CollectorRegistry()
        registry.register(Collector())
        return registry

    # ------------------------------------------------------------------ commands
    def _on_command(self, payload: bytes) -> None:
        """paho's thread: queue it; the main loop answers."""
        try:
            self.commands.put_nowait(payload)
        except queue.Full:
            self.commands_rejected += 1
            self._answer(None, None, error="busy: too many pending commands")

    def _answer(self, command_id, action, result: dict | None = None, error: str | None = None) -> None:
        payload = {"id": command_id, "action": action, "ok": error is None, "ts": round(time.time(), 3)}
        if error is None:
            payload["result"] = result or {}
        else:
            payload["error"] = error
            log.warning("command %s rejected: %s", action or "?", error)
        self.publisher.publish_json("command/result", payload, qos=1)

    def handle_commands(self) -> None:
        for payload in drain(self.commands):
            try:
                command = parse_command(payload)
                self._answer(command.id, command.action, self.execute(command))
            except CommandError as exc:
                self.commands_rejected += 1
                self._answer(exc.command_id, None, error=str(exc))
            except Exception as exc:  # a command must never stop the bin
                log.exception("command failed")
                self.commands_rejected += 1
                self._answer(None, None, error=f"internal error: {type(exc).__name__}: {exc}")

    def execute(self, command: Command) -> dict:
        action = command.action
        if action == "ping":
            return {"pong": True}
        if action == "status":
            return self.status_payload()
        if action in ("pause", "resume"):
            self.paused = action == "pause"
            self.publisher.publish_status()
            return {"paused": self.paused}
        if action == "set_threshold":
            self.decider.config.min_confidence = float(command.params["value"])
            return {"min_confidence": self.decider.config.min_confidence}
        if action == "snapshot":
            if self.last_frame is None:
                raise CommandError("no frame captured yet", command.id)
            jpeg = encode_jpeg(self.last_frame.image, quality=95)  # OpenCV's default, as snapshots always had
            self.publisher.publish_bytes("snapshot", jpeg, qos=0)
            return {
                "topic": self.publisher.topic("snapshot"),
                "bytes": len(jpeg),
                "frame_id": self.last_frame.frame_id,
            }
        if action == "reload_model":
            path = Path(command.params.get("bundle") or self.config.model.bundle)
            try:
                self.reload_model(path)
            except SmartbinError as exc:
                raise CommandError(f"reload refused, still serving the old model: {exc}", command.id) from None
            return {"model": self.status_payload()["model"]}
        raise CommandError(f"unknown action {action!r}", command.id)

    def reload_model(self, path: Path) -> None:
        """Verify and load the new bundle first; the old one keeps serving if anything fails."""
        Bundle.open(path).verify()
        self._serve(self._load_classifier(self.config, path), self.decider.config)
        log.info("model reloaded from %s", path)

    def reload_config(self) -> None:
        """SIGHUP: re-read the config; a bad file is logged and the running config kept."""
        if self.config_path is None:
            return
        try:
            config = load_config(self.config_path)
            classifier = self._load_classifier(config)
        except SmartbinError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        self.config = config
        self._serve(classifier, self._decision_config(config))
        log.info("configuration and model reloaded from %s", self.config_path)

    def _serve(self, classifier: Classifier, decision: DecisionConfig) -> None:
        """Switch to a loaded classifier: a fresh vote (its labels may differ) and a new retained status."""
        self.classifier = classifier
        self.decider = Decider(classifier.labels, decision)
        self.publisher.publish_status()

    # ------------------------------------------------------------------ the loop
    def process(self, frame: Frame) -> Decision | None:
        """One cycle: presence -> classify (when it can matter) -> vote -> publish."""
        present = True if self.presence is None else self.presence.update(frame.image)
        prediction: Prediction | None = None
        now = time.monotonic()
        if present and self.decider.wants_classification(now):
            prediction = self.classifier.classify(frame.image)
            self.classified += 1
            self.classified_at.append(now)
            result = prediction.to_dict()
            if self.web_state is not None:
                self.web_state.set_top(result["top_k"])
            total_ms = (time.monotonic() - frame.mono) * 1e3
            self.latency["infer"].append(prediction.latency_ms["infer"])
            self.latency["total"].append(total_ms)
            if self.config.mqtt.publish_classifications:
                payload = {"ts": round(frame.ts, 3), "frame_id": frame.frame_id, **result}
                payload["latency_ms"]["capture_to_publish"] = round((time.monotonic() - frame.mono) * 1e3, 3)
                self.publisher.publish_json("classification", payload)
        vote = (prediction.label.index, prediction.confidence) if prediction else None
        decision = self.decider.update(present, now, vote, frame.frame_id)
        if decision is not None:
            self.decisions += 1
            payload = decision.to_dict()
            payload["device_id"] = self.config.device_id
            if self.web_state is not None:
                self.web_state.add_decision(payload, frame.image)
            log.info(
                "decision %s: %s -> %s (%.0f%%, %d/%d votes)",
                decision.event_id[:8],
                decision.label,
                decision.bin,
                decision.confidence * 100,
                decision.votes,
                decision.frames,
            )
            try:
                self.publisher.publish_decision(payload)
                self.outbox_error = self.outbox_open_error
            except OutboxError as exc:
                self.outbox_error = str(exc)
                log.error("%s; sending without store-and-forward", exc)
                self.publisher.publish_json("decision", payload, qos=1)
        return decision

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or the end of a finite source. Returns the exit code."""
        self._install_signals()
        self.publisher.start()
        self.capture.start()
        if self.web is not None:
            self.web.start()
        ready = False
        last_id = -1
        try:
            while not self.stop_requested.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload_config()
                self.handle_commands()
                if self.web_state is not None:
                    self.answer_web(self, self.web_state)
                self.publisher.maintain()
                frame = self.capture.next_frame(last_id, timeout=0.5)
                if frame is None:
                    if self.capture.ended:
                        log.info("source ended")
                        break
                else:
                    last_id = frame.frame_id
                    self.last_frame = frame
                    if not self.paused:
                        self.process(frame)
                    self.last_healthy = time.monotonic()
                    if not ready:
                        ready = True
                        self.notifier.ready(self.summary())
                        log.info("ready: %s", self.summary())
                if time.monotonic() - self.last_healthy < self.config.source.stall_timeout_s:
                    self.notifier.watchdog()  # only after a real cycle, within the grace period
                self._periodic()
        finally:
            self.shutdown()
        return 0

    def _periodic(self) -> None:
        now = time.monotonic()
        health = self.health()
        if health != self._health_reported:
            self._health_reported = health
            self.publisher.publish_status()
        if now >= self._metrics_due:
            self._metrics_due = now + self.config.mqtt.metrics_interval_s
            metrics = self.metrics_payload()
            self.publisher.publish_json("metrics", metrics)
            self.notifier.status(self.summary(metrics))

    def summary(self, metrics: dict | None = None) -> str:
        engine = self.classifier.engine
        text = f"{engine.variant} on {engine.backend}, camera {self.capture.health.state}"
        if metrics:
            text += f", {metrics['fps']} fps, outbox {metrics['outbox_depth']}"
        return text

    def shutdown(self) -> None:
        self.notifier.stopping()
        if self.web is not None:
            self.web.stop()
        self.capture.stop()
        left = self.publisher.stop(timeout=3.0)
        if left:
            log.warning("%d decision(s) stay in the outbox for the next start", left)
        self.outbox.close()
        log.info("stopped")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())


def run_daemon(config_path: str | Path) -> int:
    """Load the config (ConfigError on mistakes), build the daemon and run it."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.log_level)
    log.info("smartbin %s on %s (%s), pid %d", __version__, socket.gethostname(), platform.machine(), os.getpid())
    return Daemon(config, Path(config_path)).run()
