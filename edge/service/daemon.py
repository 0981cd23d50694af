"""`smartbin run`: camera -> preprocess -> engine -> decision -> MQTT, for months, under systemd.

Everything happens in the main loop (``step``) except capture (its own thread) and MQTT I/O
(paho's thread): commands are queued and carried out between frames, so a reload never races
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge import __version__
from edge.classifier import Classifier, Prediction
from edge.config import Config, load_config
from edge.errors import CameraLost, ConfigError, SmartbinError
from edge.service.background import Background
from edge.service.backoff import RestartBackoff
from edge.service.build import make_capture, make_presence
from edge.service.commands import Command, CommandError, execute_command, parse_command
from edge.service.counters import Counters, CountersError
from edge.service.models import ModelStore
from edge.service.mqtt import Publisher, dumps
from edge.service.notify import Notifier
from edge.service.outbox import Outbox, OutboxError
from edge.service.queues import drain
from edge.service.reload import PreparedReload, apply_reload, prepare_reload
from edge.service.samples import SampleStore
from edge.service.serving import Serving
from edge.service.status import StatusView, cpu_temperature, metrics_payload, status_payload
from edge.service.update import UpdateRequest
from edge.service.web import WebServer, WebState, answer_classify_requests
from edge.sources import Frame
from edge.stats import Window, percentiles
from edge.vision.decision import Decider, Decision

log = logging.getLogger(__name__)

COMMAND_QUEUE = 64
START_FAILURES = ".start-failures"  # in the model store: failed starts in a row, for the restart back-off
RECENT_DECISIONS = 50
LATENCY_WINDOW = 500
FPS_WINDOW_S = 5.0
CAMERA_LOST_S = 3.0  # no frame for this long: camera_lost on the retained status
# Per-frame stages timed inside the loop (the bench prints them; `infer` and `total` go to metrics).
STAGES = ("wait", "preprocess", "infer", "postprocess", "decide", "json", "publish", "total")


@dataclass
class Step:
    """What one turn of the loop did: the frame it took (None on timeout) and the decision it made."""

    frame: Frame | None = None
    decision: Decision | None = None


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None):
        self._config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.started = time.time()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.paused = False
        self.ready = False
        self.on_ready: Callable[[], None] | None = None  # run_daemon: a good start resets the restart backoff
        self.commands: queue.Queue[bytes] = queue.Queue(COMMAND_QUEUE)
        self.background = Background()
        self.models = Serving(config, self.notifier, self.background, self._switched, self.publish_model, self._answer)
        self.capture = make_capture(config)
        self.presence = make_presence(config)
        self.decider = Decider(self.classifier.labels, config.decision.model_copy())
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
        self.last_top_k: list[dict] = []
        # the last decisions with their frames: a correction of one that was not sampled still keeps it
        self.recent: deque[tuple[dict, Frame, list[dict]]] = deque(maxlen=RECENT_DECISIONS)
        self.samples = SampleStore(config.samples, config.decision.default_bin) if config.samples.enabled else None
        try:
            self.counters = Counters(config.counters.path)
        except CountersError as exc:  # counts are for people; the bin sorts without them
            log.error("%s: cannot keep counts (%s); counting in memory", config.counters.path, exc)
            self.counters = Counters(":memory:")
        self.last_id = -1
        self.last_healthy = time.monotonic()  # when the last frame arrived (at start: the start)
        self.started_mono = self.last_healthy
        self.stages: dict[str, Window] = {k: Window(LATENCY_WINDOW) for k in STAGES}
        self.classified = 0
        self.decisions = 0
        self.commands_rejected = 0
        self._metrics_due = time.monotonic() + config.mqtt.metrics_interval_s
        self.classified_at = Window(1000)
        self._health_reported = "ok"
        self.publisher: Publisher | None = None  # its Last Will is built from the view, which reads it
        self.publisher = self.make_publisher(config)
        self.web_state: WebState | None = None
        self.web = self.make_web(config)

    # ------------------------------------------------------------------ construction
    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:  # a reload: what serves loads with the new one too
        self._config = config
        self.models.config = config

    @property
    def classifier(self) -> Classifier:
        """The classifier that serves now (``Serving`` decides which)."""
        return self.models.classifier

    @classifier.setter
    def classifier(self, classifier: Classifier) -> None:  # a reload of the model section (reload.py)
        self.models.classifier = classifier

    @property
    def store(self) -> ModelStore:
        return self.models.store

    def make_publisher(self, config: Config) -> Publisher:
        status = lambda state: status_payload(self.view(), state)  # noqa: E731 - read at publish time
        return Publisher(
            config.mqtt,
            config.topic_base,
            config.device_id,
            self.outbox,
            self._on_command,
            status,
            retained=lambda: {"model": self.models.payload()},
        )

    def make_web(self, config: Config) -> WebServer | None:
        if not config.web.enabled:
            return None
        self.web_state = self.web_state or WebState()
        roi = config.source.roi.to_roi() if config.source.roi else None
        samples = config.samples.path if config.samples.enabled else None
        return WebServer(
            config.web,
            config.device_id,
            self.view,
            lambda: self.last_frame,
            self.web_state,
            roi,
            samples,
            self._on_command,
        )

    # ------------------------------------------------------------------ the status view
    def health(self) -> str:
        """``camera_lost`` (reconnecting, or no frame for CAMERA_LOST_S), ``degraded`` (the outbox cannot be
        written, or presence is re-learning the empty bin), else ``ok``."""
        capture = self.capture.health
        quiet = time.monotonic() - self.last_healthy > CAMERA_LOST_S and not self.capture.ended
        if capture.state == "reconnecting" or quiet:
            return "camera_lost"
        relearning = self.presence is not None and self.presence.relearns and self.presence.state() == "learning"
        if self.outbox_error or relearning:
            return "degraded"
        return "ok"

    def fps(self) -> float:
        """Classified frames per second over the last FPS_WINDOW_S seconds."""
        now = time.monotonic()
        return round(sum(1 for t in self.classified_at.values() if now - t <= FPS_WINDOW_S) / FPS_WINDOW_S, 2)

    def view(self) -> StatusView:
        """A snapshot of what runs and how it does: the only thing MQTT status/metrics and the web page read."""
        engine, capture = self.classifier.engine, self.capture.health
        try:
            outbox_depth, outbox_dropped = self.outbox.depth(), self.outbox.dropped()
        except OutboxError as exc:  # the view is read from paho's and the web page's threads: never raise there
            outbox_depth, outbox_dropped = 0, 0  # unknown; outbox_error (and health) say why
            self.outbox_error = str(exc)
        try:
            counts = self.counters.summary()
        except CountersError as exc:
            log.error("%s", exc)
            counts = None
        return StatusView(
            device_id=self.config.device_id,
            version=__version__,
            host=socket.gethostname(),
            started=self.started,
            ts=time.time(),
            model=self.models.summary(),
            backend=engine.backend,
            delegate=engine.delegate,
            health=self.health(),
            source={"uri": self.config.source.uri, "state": capture.state, "error": capture.error},
            paused=self.paused,
            fps=self.fps(),
            frames_classified=self.classified,
            frames_grabbed=capture.grabbed,
            frames_dropped=max(0, capture.grabbed - capture.frames),
            decisions=self.decisions,
            latency_ms={k: percentiles(self.stages[k].values(), digits=2) for k in ("infer", "total")},
            outbox_depth=outbox_depth,
            outbox_dropped=outbox_dropped,
            outbox_error=self.outbox_error,
            source_reconnects=capture.reconnects,
            broker_connected=self.publisher is not None and self.publisher.connected.is_set(),
            broker_connects=self.publisher.connects if self.publisher is not None else 0,
            commands_rejected=self.commands_rejected,
            cpu_temp_c=cpu_temperature(),
            samples=self.samples.counts() if self.samples else None,
            counts=counts,
            presence=self.presence.summary() if self.presence is not None else None,
        )

    def stage_figures(self) -> dict[str, dict[str, float]]:
        """Percentiles of every timed stage of the loop (the bench's breakdown)."""
        figures = {k: percentiles(v.values()) for k, v in self.stages.items()}
        return {k: v for k, v in figures.items() if v}

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
            command = None
            try:
                command = parse_command(payload)
                result = self.execute(command)
                if result is not None:
                    self._answer(command.id, command.action, result)
            except CommandError as exc:
                self.commands_rejected += 1
                command_id = exc.command_id if exc.command_id is not None or command is None else command.id
                self._answer(command_id, command.action if command else None, error=str(exc))
            except Exception as exc:  # a command must never stop the bin
                log.exception("command failed")
                self.commands_rejected += 1
                self._answer(None, None, error=f"internal error: {type(exc).__name__}: {exc}")

    def execute(self, command: Command) -> dict | None:
        return execute_command(self, command)

    def reload_model(self, path: Path, command_id=None) -> None:
        self.models.reload(path, command_id)

    def start_update(self, request: UpdateRequest) -> None:
        self.models.start_update(request)

    def _switched(self, classifier: Classifier) -> None:
        """Another classifier serves: the vote follows its labels, and the status says what runs."""
        self.decider = Decider(classifier.labels, self.decider.config)
        self.publisher.publish_status()

    def publish_model(self) -> None:
        self.publisher.publish_json("model", self.models.payload(), qos=1, retain=True)

    # ------------------------------------------------------------------ SIGHUP
    def reload_config(self) -> None:
        """SIGHUP: read the file and load a changed model beside the loop, then rebuild each changed section on
        it, or refuse the whole reload (edge/service/reload.py). A SIGHUP while one is prepared waits its turn
        and plans against the config the one before left in force."""
        if self.config_path is None:
            return
        path = self.config_path

        def done(prepared: PreparedReload | None, error: BaseException | None) -> None:
            if error is not None:
                log.error("reload refused, keeping the running configuration: %s", error)
            else:
                apply_reload(self, prepared, path)

        self.background.submit("reload", lambda: prepare_reload(self.config, path), done)

    # ------------------------------------------------------------------ the loop
    def process(self, frame: Frame) -> Decision | None:
        """One frame: presence -> classify (when it can matter) -> vote -> publish."""
        now = time.monotonic()
        present = True if self.presence is None else self.presence.update(frame.image, now)
        prediction: Prediction | None = None
        if present and self.decider.wants_classification(now):
            prediction = self.models.classify(frame.image)
            if prediction is None:  # the new model failed inside its health window: rolled back
                return None
            self.classified += 1
            self.classified_at.append(now)
            self.stages["wait"].append((now - frame.mono) * 1e3)
            for stage, ms in prediction.latency_ms.items():
                self.stages[stage].append(ms)
        vote = (prediction.label.index, prediction.confidence) if prediction else None
        t = time.monotonic()
        decision = self.decider.update(present, now, vote, frame.frame_id)
        self.stages["decide"].append((time.monotonic() - t) * 1e3)
        if prediction is not None:
            self._publish_prediction(frame, prediction)
        if decision is not None:
            self._publish_decision(decision, frame)
        return decision

    def _publish_prediction(self, frame: Frame, prediction: Prediction) -> None:
        result = prediction.to_dict()
        self.last_top_k = result["top_k"]
        if self.web_state is not None:
            self.web_state.set_top(result["top_k"])
        if self.config.mqtt.publish_classifications:
            t = time.monotonic()
            result["latency_ms"]["capture_to_publish"] = round((t - frame.mono) * 1e3, 3)
            text = dumps({"ts": round(frame.ts, 3), "frame_id": frame.frame_id, **result})
            t2 = time.monotonic()
            self.publisher.publish_bytes("classification", text)
            done = time.monotonic()
            self.stages["json"].append((t2 - t) * 1e3)
            self.stages["publish"].append((done - t2) * 1e3)
        self.stages["total"].append((time.monotonic() - frame.mono) * 1e3)

    def _publish_decision(self, decision: Decision, frame: Frame) -> None:
        self.decisions += 1
        payload = {**decision.to_dict(), "device_id": self.config.device_id}
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
        self.recent.append((payload, frame, self.last_top_k))
        try:
            self.counters.count_decision(payload)
        except CountersError as exc:
            log.error("decision not counted: %s", exc)
        if self.samples is not None:
            self.samples.offer(payload, frame.image, self.last_top_k, self.models.reference())

    # ------------------------------------------------------------------ samples and corrections
    def flag(self) -> dict:
        """Keep the newest frame as a sample, with the newest prediction (an operator's "look at this")."""
        frame = self.last_frame
        if self.samples is None:
            raise CommandError("samples.enabled is false in the config")
        if frame is None:
            raise CommandError("no frame captured yet")
        top = self.last_top_k[0] if self.last_top_k else {}
        event = {"event_id": f"flag-{frame.frame_id}-{int(frame.ts)}", "ts": frame.ts, **top}
        if not self.samples.offer(event, frame.image, self.last_top_k, self.models.reference(), flagged=True):
            raise CommandError("the sample writer is busy; try again")
        return {"event_id": event["event_id"]}

    def correct(self, event_id: str, label: str) -> dict:
        """Record the true label of a decision beside its sample (kept now if it had not been)."""
        if self.samples is None:
            raise CommandError("samples.enabled is false in the config")
        sample = self.samples.correct(event_id, label)
        if sample is None:
            match = [r for r in self.recent if r[0]["event_id"] == event_id]
            if not match:
                raise CommandError(f"no sample and no recent decision with event_id {event_id!r}")
            payload, frame, top_k = match[-1]
            sample = self.samples.keep_now(payload, frame.image, top_k, self.models.reference(), label)
        known = label in {lab.name for lab in self.classifier.labels}
        try:
            self.counters.count_correction(label)
        except CountersError as exc:  # the correction itself is kept in the sample
            log.error("correction not counted: %s", exc)
        return {"sample": sample, "label": label, "known_label": known}

    def start(self) -> Daemon:
        """Connect to the broker, open the camera, serve the page, start the sample writer."""
        if self.samples is not None:
            try:
                self.samples.start()
            except OSError as exc:  # samples are for later; the bin sorts without them
                log.error("%s: cannot keep samples: %s", self.config.samples.path, exc)
                self.samples = None
        self.publisher.start()
        self.capture.start()
        if self.web is not None:
            self.web.start()
        return self

    def step(self, timeout: float = 0.5) -> Step:
        """One turn of the loop: reload and commands, the newest frame through the pipeline, watchdog, metrics."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload_config()
        self.background.apply()
        self.handle_commands()
        self.models.handle_updates()
        if self.web_state is not None:
            answer_classify_requests(
                self.web_state, self.last_frame, lambda image: self.classifier.classify(image).to_dict()
            )
        self.publisher.maintain()
        step = Step(self.capture.next_frame(self.last_id, timeout=timeout))
        if step.frame is not None:
            self.last_id = step.frame.frame_id
            self.last_frame = step.frame
            if not self.paused:
                step.decision = self.process(step.frame)
            self.last_healthy = time.monotonic()
        now, source = time.monotonic(), self.config.source
        if not self.ready and (step.frame is not None or now - self.started_mono > source.stall_timeout_s):
            # READY after the first real cycle; without a camera at boot, after stall_timeout_s anyway: the
            # unit is up and says camera_lost, instead of dying of its start timeout in a restart loop
            self.ready = True
            self.notifier.ready(self.summary())
            log.info("ready: %s", self.summary())
        if step.frame is not None and self.on_ready is not None:  # a real cycle: the back-off starts over
            self.on_ready()
            self.on_ready = None
        # The loop turned: that is what the watchdog watches. A lost camera is the capture thread's to
        # reconnect and the status's to say; a hung loop stops these pings and systemd restarts it.
        self.notifier.watchdog()
        if source.restart_after_s and now - self.last_healthy > source.restart_after_s:
            raise CameraLost(
                f"{source.uri}: no frame for {now - self.last_healthy:.0f} s (source.restart_after_s): "
                f"restarting the service ({self.capture.health.error or 'no error reported'})"
            )
        self._periodic()
        return step

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or the end of a finite source. Returns the exit code."""
        self._install_signals()
        self.start()
        try:
            while not self.stop_requested.is_set():
                if self.step().frame is None and self.capture.ended:
                    log.info("source ended")
                    break
        finally:
            self.shutdown()
        return 0

    def _periodic(self) -> None:
        self.models.check_trial()
        now = time.monotonic()
        health = self.health()
        if health != self._health_reported:
            self._health_reported = health
            self.publisher.publish_status()
        if now >= self._metrics_due:
            self._metrics_due = now + self.config.mqtt.metrics_interval_s
            metrics = metrics_payload(self.view())
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
        self.models.stopping()
        if self.web is not None:
            self.web.stop()
        self.capture.stop()
        if self.samples is not None:
            self.samples.stop()
        left = self.publisher.stop(timeout=3.0)
        if left:
            log.warning("%d decision(s) stay in the outbox for the next start", left)
        self.outbox.close()
        self.counters.close()
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
    backoff = RestartBackoff(config.updates.store / START_FAILURES, Notifier())
    try:
        daemon = Daemon(config, Path(config_path))
        daemon.on_ready = backoff.reset
        return daemon.run()
    except ConfigError:
        raise  # 78: a restart cannot fix it
    except SmartbinError as exc:  # 75 (edge/cli.py): a restart may, after the back-off
        backoff.wait(str(exc))
        raise
