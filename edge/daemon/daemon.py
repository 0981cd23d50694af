"""`smartbin run`: camera -> preprocess -> engine -> decision -> MQTT, for months, under systemd.

The daemon composes parts with one job each: the camera (edge/daemon/camera.py), the pipeline
(presence -> classify -> vote, no I/O), the model's life (edge/models/serving.py), the outputs
(MQTT, outbox, counters, samples, page state) and the status page's server. Everything happens in the
main loop (``step``) except capture (its own thread) and MQTT I/O (paho's thread): commands are queued
and carried out between frames, so a reload never races an inference, and watchdog pings prove that a
whole cycle really ran. The parts are built bottom-up and never call the daemon: what they have to say
(answers, another model serving, "classify now") is posted to one event queue (edge/daemon/events.py)
that the loop handles in one place, before the next frame.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.classifier import Classifier
from edge.config import Config, load_config
from edge.daemon.camera import Camera
from edge.daemon.commands import CommandQueue, answer_payload
from edge.daemon.events import ClassifyNow, Events
from edge.daemon.outputs import Hooks, Outputs
from edge.daemon.pipeline import Pipeline
from edge.daemon.reload import PreparedReload, apply_reload, prepare_reload
from edge.errors import CameraLost, ConfigError, Crashed, SmartbinError
from edge.models.build import make_presence
from edge.models.events import Answered, ModelChanged, Switched
from edge.models.serving import Serving
from edge.models.update import UpdateRequest
from edge.sources import Frame
from edge.system.background import Background
from edge.system.backoff import RestartBackoff
from edge.system.notify import Notifier
from edge.system.signals import set_on
from edge.vision.decision import ItemDecision
from edge.web.host import WebHost
from edge.web.page import ClassifyRequest
from edge.wire.status import StatusBoard, StatusView, cpu_temperature, metrics_payload, status_payload
from edge.wire.topics import Topic

log = logging.getLogger(__name__)

START_FAILURES = ".start-failures"  # in the model store: failed starts in a row, for the restart back-off
VIEW_EVERY_S = 0.25  # how often the loop posts a new status view for the page and a reconnect to read


@dataclass
class Step:
    """What one turn of the loop did: the frame it took (None on timeout) and the decision it made."""

    frame: Frame | None = None
    decision: ItemDecision | None = None


class Daemon:
    """The bin's service: its parts, the loop that drives them, and what commands and reloads may change."""

    def __init__(self, config: Config, config_path: Path | None = None):
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.paused = False
        self.ready = False
        self.background = Background()
        self.events = Events()
        self.board = StatusBoard()
        self.commands = CommandQueue(self.events)
        self.models = Serving(config, self.notifier, self.background, self.events)
        self.camera = Camera(config)
        self.pipeline = Pipeline(
            self.models.classify, self.classifier.labels, make_presence(config), config.decision.settings()
        )
        hooks = Hooks(self.commands.submit, self.board.status, self.models.payload, self.models.reference)
        self.outputs = Outputs(config, self.pipeline.timings, hooks)
        self.web = WebHost(
            config,
            self.board.view,
            lambda: self.camera.last_frame,
            self.outputs.page_state,
            self.commands.submit,
            self.events.classify_now,
            lambda: (self.classifier.bundle.path, self.classifier.engine.variant),
        )
        self._metrics_due = time.monotonic() + config.mqtt.metrics_interval_s
        self._view_due = 0.0
        self._health_reported = "ok"

    @property
    def classifier(self) -> Classifier:
        """The classifier that serves now (``Serving`` decides which)."""
        return self.models.classifier

    # ------------------------------------------------------------------ the status view
    def health(self) -> str:
        """``camera_lost`` (reconnecting, or no frame for a few seconds), ``degraded`` (the outbox cannot be
        written, the broker refuses decisions, or presence is re-learning the empty bin), else ``ok``."""
        if self.camera.lost():
            return "camera_lost"
        if self.outputs.outbox_error or self.outputs.refusals()[1] or self.pipeline.relearning():
            return "degraded"
        return "ok"

    def view(self) -> StatusView:
        """A snapshot of what runs and how it does: the only thing MQTT status/metrics and the web page read."""
        engine, capture = self.classifier.engine, self.camera.capture.health
        outbox_depth, outbox_dropped, outbox_error = self.outputs.outbox_figures()
        connected, connects, protocol = self.outputs.broker()
        refused, refusal = self.outputs.refusals()
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
            source=self.camera.source(),
            paused=self.paused,
            fps=self.pipeline.fps(),
            frames_classified=self.pipeline.classified,
            frames_grabbed=capture.grabbed,
            frames_dropped=max(0, capture.grabbed - capture.frames),
            decisions=self.outputs.decisions,
            latency_ms=self.pipeline.timings.percentiles(("infer", "total"), digits=2),
            latency_histograms={k: h.cumulative() for k, h in self.pipeline.timings.histograms.items()},
            outbox_depth=outbox_depth,
            outbox_dropped=outbox_dropped,
            outbox_error=outbox_error,
            outbox_refused=refused,
            outbox_refusal=refusal,
            source_reconnects=capture.reconnects,
            broker_connected=connected,
            broker_connects=connects,
            mqtt_protocol=protocol,
            commands_rejected=self.commands.rejected,
            cpu_temp_c=cpu_temperature(),
            samples=self.outputs.sample_counts(),
            counts=self.outputs.counts(),
            presence=self.pipeline.presence_summary(),
            pick=known.payload() if (known := self.models.picks.known(self.classifier)) else None,
        )

    def post_view(self) -> StatusView:
        """A new view for the board (the page, /healthz, a reconnect's status read it from there)."""
        view = self.view()
        self.board.post(view)
        self._view_due = time.monotonic() + VIEW_EVERY_S
        return view

    def publish_status(self) -> None:
        """The retained status, from a view made now."""
        self.post_view()
        self.outputs.publish_status()

    def summary(self, metrics: dict | None = None) -> str:
        """One line for systemd's STATUS=."""
        engine = self.classifier.engine
        text = f"{engine.variant} on {engine.backend}, camera {self.camera.capture.health.state}"
        if metrics:
            text += f", {metrics['fps']} fps, outbox {metrics['outbox_depth']}"
        return text

    # ------------------------------------------------------------------ what commands may do (CommandTarget)
    def status(self) -> dict:
        return status_payload(self.view())

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.publish_status()

    def set_threshold(self, value: float) -> float:
        return self.pipeline.set_threshold(value)

    def snapshot(self) -> dict:
        return self.outputs.snapshot(self.camera.last_frame)

    def flag(self) -> dict:
        return self.outputs.flag(self.camera.last_frame)

    def correct(self, event_id: str, label: str) -> dict:
        return self.outputs.correct(event_id, label, self.classifier.labels)

    def start_update(self, request: UpdateRequest) -> None:
        self.models.start_update(request)

    def reload_model(self, bundle: str | None, command_id: Any) -> None:
        self.models.reload(bundle, command_id)

    def stop_shadow(self) -> dict:
        return self.models.stop_shadow()

    # ------------------------------------------------------------------ SIGHUP
    def reload_config(self) -> None:
        """SIGHUP: read the file and load a changed model beside the loop, then rebuild each changed section on
        it, or refuse the whole reload (edge/daemon/reload.py). A SIGHUP while one is prepared waits its turn
        and plans against the config the one before left in force."""
        if self.config_path is None:
            return
        path = self.config_path

        def done(prepared: PreparedReload | None, error: BaseException | None) -> None:
            if error is not None:
                log.error("reload refused, keeping the running configuration: %s", error)
            else:
                apply_reload(self, prepared, path)

        serving = lambda: self.models.classifier.bundle.path  # noqa: E731 - whatever serves when it runs
        self.background.submit("reload", lambda: prepare_reload(self.config, path, serving()), done)

    # ------------------------------------------------------------------ the loop
    def process(self, frame: Frame) -> ItemDecision | None:
        """One frame through the pipeline, and what it led to out through the outputs."""
        outcome = self.pipeline.process(frame)
        if outcome is None:  # the new model failed inside its health window: rolled back
            return None
        if outcome.prediction is not None:
            self.outputs.prediction(frame, outcome.prediction)
            self.models.shadow_frame(frame.frame_id, frame.image, outcome.prediction)
        if outcome.decision is not None:
            shadow = self.models.shadow_item(outcome.decision, self.pipeline.vote_settings(), self.config.device_id)
            self.outputs.decision(outcome.decision, frame, shadow)
        return outcome.decision

    def start(self) -> Daemon:
        """Connect to the broker, open the camera, serve the page, start the sample writer."""
        self.post_view()  # the Last Will and the first status are made from it
        self.outputs.start()
        self.camera.start()
        self.web.start()
        return self

    def step(self, timeout: float = 0.5) -> Step:
        """One turn of the loop: reload and commands, the newest frame through the pipeline, watchdog, metrics."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload_config()
        self.background.apply()
        self.commands.handle(self)
        self.models.handle_updates()
        self.handle_events()
        self.outputs.publisher.maintain()
        step = Step(self.camera.next_frame(timeout))
        if step.frame is not None and not self.paused:
            step.decision = self.process(step.frame)
        self._after_turn(step.frame is not None)
        return step

    def handle_events(self) -> None:
        """What the parts posted, in order; a model switched in is relabelled here, never inside a frame."""
        for event in self.events.drain():
            if isinstance(event, Answered):
                self.outputs.publish_answer(answer_payload(event))
            elif isinstance(event, Switched):
                self.pipeline.relabel(event.classifier.labels)
                self.publish_status()
            elif isinstance(event, ModelChanged):
                self.outputs.publish_model()
            elif isinstance(event, ClassifyNow):
                self._classify_now(event.request)

    def _classify_now(self, request: ClassifyRequest) -> None:
        """The page's "classify now" on the newest frame, through ``Serving`` as every frame goes (a failure
        inside a health window rolls back there too)."""
        frame = self.camera.last_frame
        try:
            if frame is None:
                return
            started = time.perf_counter()
            prediction = self.models.classify(frame.image)
            if prediction is None:
                request.result = {"error": "the new model failed and is being rolled back; try again"}
                return
            ms = round((time.perf_counter() - started) * 1e3, 1)
            request.result = {**prediction.to_dict(), "frame_id": frame.frame_id, "ms": ms}
        except Exception as exc:  # the page's button must never stop the bin
            log.exception("classify now failed")
            request.result = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            request.done.set()

    def _after_turn(self, had_frame: bool) -> None:
        """READY once, the watchdog, a camera gone too long, the periodic messages."""
        now, source = time.monotonic(), self.config.source
        if not self.ready and (had_frame or now - self.started_mono > source.stall_timeout_s):
            # READY after the first real cycle; without a camera at boot, after stall_timeout_s anyway: the
            # unit is up and says camera_lost, instead of dying of its start timeout in a restart loop
            self.ready = True
            self.notifier.ready(self.summary())
            log.info("ready: %s", self.summary())
        # The loop turned: that is what the watchdog watches. A lost camera is the capture thread's to
        # reconnect and the status's to say; a hung loop stops these pings and systemd restarts it.
        self.notifier.watchdog()
        quiet = self.camera.quiet_s()
        if source.restart_after_s and quiet > source.restart_after_s:
            raise CameraLost(
                f"{source.uri}: no frame for {quiet:.0f} s (source.restart_after_s): "
                f"restarting the service ({self.camera.capture.health.error or 'no error reported'})"
            )
        self._periodic()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or the end of a finite source. Returns the exit code."""
        self._install_signals()
        self.start()
        try:
            while not self.stop_requested.is_set():
                if self.step().frame is None and self.camera.ended:
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
            self.publish_status()
        if now >= self._metrics_due:
            self._metrics_due = now + self.config.mqtt.metrics_interval_s
            metrics = metrics_payload(self.post_view())
            self.outputs.publisher.publish_json(Topic.METRICS, metrics)
            self.notifier.status(self.summary(metrics))
        elif now >= self._view_due:
            self.post_view()

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.models.stopping()
        self.handle_events()  # answers still waiting go out before the broker does
        try:
            self.post_view()  # the offline status says how it ended
        except Exception:  # a stop must still close the outbox
            log.exception("no last status view")
        self.web.stop()
        self.camera.stop()
        self.outputs.stop()
        log.info("stopped")

    def _install_signals(self) -> None:
        set_on(self.stop_requested, signal.SIGTERM, signal.SIGINT)
        set_on(self.reload_requested, signal.SIGHUP)


def run_daemon(config_path: str | Path) -> int:
    """Load the config (ConfigError on mistakes), build the daemon and run it."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.log_level)
    log.info("smartbin %s on %s (%s), pid %d", __version__, socket.gethostname(), platform.machine(), os.getpid())
    backoff = RestartBackoff(config.updates.store / START_FAILURES, Notifier())
    try:
        return Daemon(config, Path(config_path)).run()
    except ConfigError:
        raise  # 78: a restart cannot fix it
    except SmartbinError as exc:  # 75 (edge/cli.py): a restart may, after the back-off
        backoff.wait(str(exc))
        raise
    except Exception as exc:
        # Not foreseen (an accelerator that reset, a disk error): a new process may fix it, after the same
        # back-off, so that repeated crashes never reach systemd's start limit and leave the bin dead.
        log.exception("the daemon failed")
        reason = f"{type(exc).__name__}: {exc}"
        backoff.wait(reason)
        raise Crashed(reason) from exc
