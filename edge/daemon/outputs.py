"""Where the bin's results go: MQTT (decisions through the outbox), the counters, the sample store and the
status page's state; and what the operator's commands ask of them (a snapshot, a flag, a correction)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.broker.messages import dumps
from edge.broker.publisher import Publisher
from edge.broker.sample_sender import SampleSender
from edge.classifier import Prediction
from edge.config import Config
from edge.daemon.pipeline import Timings
from edge.formats.images import encode_jpeg
from edge.formats.labels import Label
from edge.sources import Frame
from edge.storage.counters import Counters, CountersError
from edge.storage.outbox import Outbox, OutboxError
from edge.storage.sample_queue import SampleQueue
from edge.storage.samples import SampleStore
from edge.system.repeats import OncePerChange
from edge.vision.decision import ItemDecision
from edge.web.page import WebState
from edge.wire import payloads
from edge.wire.command_spec import CommandError
from edge.wire.features import Features
from edge.wire.shadow import ShadowItem
from edge.wire.topics import Topic, under

log = logging.getLogger(__name__)

CORRECTABLE_DECISIONS = 50  # a correction or flag may name one of the last this many decisions


@dataclass
class Hooks:
    """What the outputs read from the rest of the daemon, when they need it."""

    on_command: Callable[[bytes, bool], None]  # a command arrived (paho's thread), and whether it was retained
    status: Callable[[str], dict]  # the retained status message in a given state
    model: Callable[[], dict]  # the retained …/model message
    reference: Callable[[], dict]  # which model made a prediction (samples record it)


class Outputs:
    """The publisher, outbox, counters, samples and web state, and the one way results reach them."""

    def __init__(self, config: Config, timings: Timings, hooks: Hooks):
        self.config = config
        self.timings, self.hooks = timings, hooks
        self.outbox_open_error: str | None = None  # sticky: the configured file could not be opened
        try:
            self.outbox = Outbox(config.outbox.path, config.outbox.max_items)
        except OutboxError as exc:
            # Keep sorting: decisions still go out, only the power-cut guarantee is lost (and reported).
            self.outbox_open_error = f"{exc}; decisions are kept in memory only"
            log.error("%s", self.outbox_open_error)
            self.outbox = Outbox(":memory:", config.outbox.max_items)
        self.outbox_error = self.outbox_open_error
        try:
            self.counters = Counters(config.counters.path)
        except CountersError as exc:  # counts are for people; the bin sorts without them
            log.error("%s: cannot keep counts (%s); counting in memory", config.counters.path, exc)
            self.counters = Counters(":memory:")
        self.counter_errors = OncePerChange(log, "counting")
        self.count_read_errors = OncePerChange(log, "reading the counts")  # apart: it alternates with counting
        self.store_errors = OncePerChange(log, "storing decisions")  # each its own: they alternate
        self.sample_queue = SampleQueue(self.outbox, config.samples.mqtt_queue)  # samples.over_mqtt's
        self.samples = self._sample_store(config)
        self.web_state: WebState | None = None  # made when a status page is first served
        self.decisions = 0
        self.last_top_k: list[payloads.TopK] = []
        self.last_features: np.ndarray | None = None  # the last classified frame's (a bundle in two parts)
        # the last decisions, each as its sample would be: a correction of one that was not sampled keeps it
        self.recent: deque[tuple[payloads.Sample, Frame]] = deque(maxlen=CORRECTABLE_DECISIONS)
        self.publisher = self.make_publisher(config)  # not started: its Last Will is made when it starts

    def make_publisher(self, config: Config) -> Publisher:
        """A publisher for this config (not started): the daemon's, or a reload's replacement."""
        return Publisher(
            config.mqtt,
            config.topic_base,
            config.device_id,
            self.outbox,
            self.hooks.on_command,
            self.hooks.status,
            retained=lambda: {Topic.MODEL: self.hooks.model()},
            samples=self._sample_sender(config),
        )

    def sample_counts(self) -> dict | None:
        """The sample store's counts, and those of sending them over MQTT when the bin does."""
        if self.samples is None:
            return None
        counts, sender = self.samples.counts(), self.publisher.samples
        if sender is not None:
            counts.update(unsent=sender.depth(), sent=sender.sent, unsent_dropped=self.sample_queue.dropped)
        return counts

    def _sample_store(self, config: Config) -> SampleStore | None:
        over_mqtt = config.samples.over_mqtt
        default_bin = config.decision.default_bin
        on_written = self.sample_queue.add if over_mqtt else None
        return SampleStore(config.samples, default_bin, on_written) if config.samples.enabled else None

    def _sample_sender(self, config: Config) -> SampleSender | None:
        """What sends the kept samples over MQTT, when the config asks for it."""
        if not (config.samples.enabled and config.samples.over_mqtt):
            return None
        self.sample_queue.max_items = config.samples.mqtt_queue
        return SampleSender(self.sample_queue, config.samples.path, under(config.topic_base, Topic.SAMPLE))

    def replace_publisher(self, publisher: Publisher) -> None:
        """A reload's new broker or topics: offline on the old ones, the backlog kept in the outbox."""
        self.publisher.stop(timeout=3.0)
        self.publisher = publisher
        self.publisher.start()

    # ------------------------------------------------------------------ results
    def prediction(self, frame: Frame, prediction: Prediction) -> None:
        """One classified frame: …/classification when configured, then the page's top-k (off the latency path)."""
        self.last_top_k, self.last_features = payloads.top_k(prediction), prediction.features
        if self.config.mqtt.publish_classifications:
            t = time.monotonic()
            message = payloads.classification(
                prediction, frame.ts, frame.frame_id, (t - frame.mono) * 1e3, self.last_top_k
            )
            text = dumps(message.dump())
            t2 = time.monotonic()
            self.publisher.publish_bytes(Topic.CLASSIFICATION, text)
            self.timings.add("json", (t2 - t) * 1e3)
            self.timings.add("publish", (time.monotonic() - t2) * 1e3)
        self.timings.add("total", (time.monotonic() - frame.mono) * 1e3)
        if self.web_state is not None:
            self.web_state.set_top([t.model_dump() for t in self.last_top_k])

    def decision(self, decision: ItemDecision, frame: Frame, shadow: ShadowItem | None = None) -> None:
        """One item's decision: outbox and MQTT, the page, the counters and (maybe) a sample; with a model in the
        shadow, what it would have done (…/shadow; an item it would send elsewhere is kept as a sample)."""
        self.decisions += 1
        message = payloads.Decision(**decision.to_dict(), device_id=self.config.device_id)
        payload = message.dump()
        if self.web_state is not None:
            self.web_state.add_decision(message.event_id, payload, frame.image)
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
            self.store_errors.ok()
        except OutboxError as exc:
            self.outbox_error = str(exc)
            self.store_errors.error(f"{exc}; sending without store-and-forward")
            self.publisher.publish_json(Topic.DECISION, payload)
        model = self.hooks.reference()
        features = None
        if self.last_features is not None and self.config.samples.features and "backbone" in model:
            features = Features.of(self.last_features, model["backbone"], model["variant"])
        sample = payloads.Sample(**payload, top_k=self.last_top_k, model=model, features=features)
        self.recent.append((sample, frame))
        try:
            self.counters.count_decision(message)
            self.counter_errors.ok()
        except CountersError as exc:
            self.counter_errors.error(f"decision not counted: {exc}")
        if shadow is not None:
            self.publisher.publish_json(Topic.SHADOW, shadow.dump())
        if self.samples is not None:
            self.samples.offer(sample, frame.image, also=() if shadow is None or shadow.agree else ("shadow_flip",))

    def page_state(self) -> WebState:
        """The status page's state, fed from now on."""
        self.web_state = self.web_state or WebState()
        return self.web_state

    def publish_status(self) -> None:
        self.publisher.publish_status()

    def publish_model(self) -> None:
        self.publisher.publish_json(Topic.MODEL, self.hooks.model())

    def publish_answer(self, payload: dict) -> None:
        self.publisher.publish_json(Topic.COMMAND_RESULT, payload)

    # ------------------------------------------------------------------ what commands ask
    def snapshot(self, frame: Frame | None) -> dict:
        """The newest frame as a JPEG on …/snapshot."""
        if frame is None:
            raise CommandError("no frame captured yet")
        jpeg = encode_jpeg(frame.image, quality=95)
        self.publisher.publish_bytes(Topic.SNAPSHOT, jpeg)
        return {"topic": self.publisher.topic(Topic.SNAPSHOT), "bytes": len(jpeg), "frame_id": frame.frame_id}

    def flag(self, frame: Frame | None) -> dict:
        """Keep the newest frame as a sample, with the newest prediction (an operator's "look at this")."""
        if self.samples is None:
            raise CommandError("samples.enabled is false in the config")
        if frame is None:
            raise CommandError("no frame captured yet")
        top = self.last_top_k[0].model_dump() if self.last_top_k else {}
        sample = payloads.Sample(
            event_id=f"flag-{frame.frame_id}-{int(frame.ts)}",
            ts=frame.ts,
            device_id=self.config.device_id,
            **top,
            top_k=self.last_top_k,
            model=self.hooks.reference(),
        )
        if not self.samples.offer(sample, frame.image, flagged=True):
            raise CommandError("the sample writer is busy; try again")
        return {"event_id": sample.event_id}

    def correct(self, event_id: str, label: str, labels: list[Label]) -> dict:
        """Record the true label of a decision beside its sample (kept now if it had not been)."""
        if self.samples is None:
            raise CommandError("samples.enabled is false in the config")
        sample = self.samples.correct(event_id, label)
        if sample is None:
            match = [(kept, frame) for kept, frame in self.recent if kept.event_id == event_id]
            if not match:
                raise CommandError(f"no sample and no recent decision with event_id {event_id!r}")
            kept, frame = match[-1]
            sample = self.samples.keep_now(kept, frame.image, label)
        try:
            self.counters.count_correction(label)
        except CountersError as exc:  # the correction itself is kept in the sample
            log.error("correction not counted: %s", exc)
        return {"sample": sample, "label": label, "known_label": label in {lab.name for lab in labels}}

    # ------------------------------------------------------------------ for the status view
    def outbox_figures(self) -> tuple[int, int, str | None]:
        """Depth, dropped and the error, if any. Read from paho's and the web page's threads: never raises."""
        try:
            return self.outbox.depth(), self.outbox.dropped(), self.outbox_error
        except OutboxError as exc:
            self.outbox_error = str(exc)
            return 0, 0, self.outbox_error  # unknown; the error (and health) say why

    def counts(self) -> dict | None:
        try:
            summary = self.counters.summary()
            self.count_read_errors.ok()
            return summary
        except CountersError as exc:  # read for every metrics message
            self.count_read_errors.error(str(exc))
            return None

    def broker(self) -> tuple[bool, int, str]:
        """Connected now, how many times it connected, and the MQTT version it speaks ("5" or "3.1.1")."""
        return self.publisher.connected.is_set(), self.publisher.connects, self.publisher.protocol

    def refusals(self) -> tuple[int, str | None]:
        """Decisions the broker refused so far, and why the last one was, while refusals last."""
        return self.publisher.refused, self.publisher.refusal

    # ------------------------------------------------------------------ life
    def _start_samples(self) -> None:
        if self.samples is not None:
            try:
                self.samples.start()
            except OSError as exc:  # samples are for later; the bin sorts without them
                log.error("%s: cannot keep samples: %s", self.config.samples.path, exc)
                self.samples = None

    def replace_samples(self, config: Config) -> None:
        """A reload's ``samples:``: what the old store has queued is written, then the new settings hold
        (``enabled: false``, a privacy request, keeps no frame from now on)."""
        if self.samples is not None:
            self.samples.stop()
        self.samples = self._sample_store(config)
        self.publisher.samples = self._sample_sender(config)
        self._start_samples()

    def start(self) -> None:
        self._start_samples()
        self.publisher.start()

    def stop(self) -> None:
        if self.samples is not None:
            self.samples.stop()
        left = self.publisher.stop(timeout=3.0)
        if left:
            log.warning("%d decision(s) stay in the outbox for the next start", left)
        self.outbox.close()
        self.counters.close()
