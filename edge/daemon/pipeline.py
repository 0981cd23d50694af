"""One frame through the bin's stages: presence -> classify (only when it can matter) -> vote. No I/O: what
it returns is published by the outputs (edge/daemon/outputs.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.classifier import Prediction
from edge.formats.labels import Label
from edge.sources import Frame
from edge.stats import Histogram, Window, percentiles
from edge.vision.decision import Decider, ItemDecision, PresenceDetector, VoteSettings

LATENCY_WINDOW = 500
FPS_WINDOW_S = 5.0
# Per-frame stages timed by the loop (the bench prints them; `infer` and `total` go to metrics).
STAGES = ("wait", "preprocess", "infer", "postprocess", "decide", "json", "publish", "total")
HISTOGRAM_STAGES = ("infer", "total")  # the ones Prometheus gets as histograms (seconds)

Classify = Callable[[np.ndarray], "Prediction | None"]  # None: no answer for this frame (a rollback)


@dataclass
class Outcome:
    """What one frame led to: its prediction (None when it was not classified) and a decision, if any."""

    prediction: Prediction | None = None
    decision: ItemDecision | None = None


class Timings:
    """The newest LATENCY_WINDOW figures of every stage, in milliseconds, written by the loop and read by
    the status view's threads."""

    def __init__(self) -> None:
        self.stages: dict[str, Window] = {k: Window(LATENCY_WINDOW) for k in STAGES}
        self.histograms: dict[str, Histogram] = {k: Histogram() for k in HISTOGRAM_STAGES}

    def add(self, stage: str, ms: float) -> None:
        self.stages[stage].append(ms)
        if stage in self.histograms:
            self.histograms[stage].observe(ms / 1e3)

    def percentiles(self, names: tuple[str, ...] = STAGES, digits: int | None = None) -> dict[str, dict[str, float]]:
        """Percentiles of the named stages that have figures."""
        figures = {k: percentiles(self.stages[k].values(), digits) for k in names}
        return {k: v for k, v in figures.items() if v}


class Pipeline:
    """Presence, the classifier (through ``classify``) and the vote, timed."""

    def __init__(self, classify: Classify, labels: list[Label], presence: PresenceDetector | None, vote: VoteSettings):
        self.classify = classify
        self.presence = presence
        self.decider = Decider(labels, vote)
        self.timings = Timings()
        self.classified = 0
        self.classified_at = Window(1000)

    def process(self, frame: Frame) -> Outcome | None:
        """One frame. None: the model failed inside its health window and was rolled back."""
        now = time.monotonic()
        present = True if self.presence is None else self.presence.update(frame.image, now)
        prediction: Prediction | None = None
        if present and self.decider.wants_classification(now):
            prediction = self.classify(frame.image)
            if prediction is None:
                return None
            self.classified += 1
            self.classified_at.append(now)
            self.timings.add("wait", (now - frame.mono) * 1e3)
            for stage, ms in prediction.latency_ms.items():
                self.timings.add(stage, ms)
        vote = (prediction.label.index, prediction.confidence) if prediction else None
        t = time.monotonic()
        decision = self.decider.update(present, now, vote, frame.frame_id)
        self.timings.add("decide", (time.monotonic() - t) * 1e3)
        return Outcome(prediction, decision)

    # ------------------------------------------------------------------ changes while running
    def relabel(self, labels: list[Label]) -> None:
        """Another classifier serves: the vote starts over with its labels, same settings."""
        self.decider = Decider(labels, self.decider.config)

    def vote_settings(self) -> VoteSettings:
        return self.decider.config

    def set_vote(self, vote: VoteSettings) -> None:
        self.decider = Decider(self.decider.labels, vote)

    def set_presence(self, presence: PresenceDetector | None) -> None:
        self.presence = presence

    def set_threshold(self, value: float) -> float:
        self.decider.config.min_confidence = value
        return value

    def forget_item(self) -> None:
        """The item in view counts as gone (the bench's endless stream of items)."""
        self.decider.reset()

    # ------------------------------------------------------------------ for the status view
    def fps(self) -> float:
        """Classified frames per second over the last FPS_WINDOW_S seconds."""
        now = time.monotonic()
        return round(sum(1 for t in self.classified_at.values() if now - t <= FPS_WINDOW_S) / FPS_WINDOW_S, 2)

    def relearning(self) -> bool:
        return self.presence is not None and self.presence.relearning()

    def presence_summary(self) -> dict | None:
        return self.presence.summary() if self.presence is not None else None
