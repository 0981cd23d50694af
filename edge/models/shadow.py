"""A new model in the shadow of the serving one (champion and challenger): it classifies the frames the serving
model classified, and for each item the bin decides, what it would have decided on the same frames is reported
beside what the bin did. The serving model still decides everything; the shadow moves no flap.

A shadow costs an inference per classified frame. It stops by itself when it costs more than
``updates.shadow_max_cost`` times the serving model's time and more than AFFORDED_MS a frame (the loop would
fall behind the camera), or has run
``updates.shadow_max_s`` (a rollout that died leaves no shadow running for good).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from statistics import median

from edge.classifier import Classifier
from edge.stats import Window
from edge.vision.decision import ItemDecision, VoteSettings, decide
from edge.wire.shadow import ShadowItem, ShadowState, Verdict

log = logging.getLogger(__name__)

KEPT_FRAMES = 256  # votes kept by frame id: an item's frames are among the newest
COST_FRAMES = 20  # frames measured before the cost may stop the shadow
EXPIRED = "ran for updates.shadow_max_s without being promoted or stopped"
AFFORDED_MS = 10.0  # a shadow under this a frame holds up no loop at camera rates: its ratio is noise then


class Shadow:
    """One shadow model and its running figures."""

    def __init__(self, classifier: Classifier, folder: Path, sha256: str | None, max_cost: float, max_s: float):
        self.classifier, self.folder, self.sha256 = classifier, folder, sha256
        self.max_cost, self.until = max_cost, time.monotonic() + max_s
        self.since = time.time()
        self.votes: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.ms, self.serving_ms = Window(200), Window(200)
        self.item_ms: list[float] = []
        self.items = self.agreed = 0

    def observe(self, frame_id: int, image, serving_ms: float) -> None:
        """The shadow on a frame the serving model classified in ``serving_ms`` (its stages summed; the
        shadow's are measured the same way)."""
        prediction = self.classifier.classify(image)
        ms = sum(prediction.latency_ms.values())
        self.ms.append(ms)
        self.serving_ms.append(serving_ms)
        self.item_ms.append(ms)
        self.votes[frame_id] = (prediction.label.index, prediction.confidence)
        while len(self.votes) > KEPT_FRAMES:
            self.votes.popitem(last=False)

    def compare(self, decision: ItemDecision, settings: VoteSettings, device_id: str) -> ShadowItem | None:
        """What the shadow would have decided on the decision's frames (None: it saw none of them)."""
        votes = [(*self.votes[f], f) for f in decision.frame_ids if f in self.votes]
        if not votes:
            return None
        candidate = decide(self.classifier.labels, settings, votes)
        agree = candidate.bin == decision.bin
        self.items += 1
        self.agreed += agree
        item_ms, self.item_ms = self.item_ms, []
        return ShadowItem(
            event_id=decision.event_id,
            ts=round(time.time(), 3),
            device_id=device_id,
            shadow=self.folder.name,
            serving=Verdict(bin=decision.bin, label=decision.label, confidence=decision.confidence),
            candidate=Verdict(bin=candidate.bin, label=candidate.label, confidence=candidate.confidence),
            agree=agree,
            shadow_ms=round(sum(item_ms) / len(item_ms), 3) if item_ms else 0.0,
        )

    def expired(self) -> bool:
        """It ran for updates.shadow_max_s."""
        return time.monotonic() >= self.until

    def why_stop(self) -> str | None:
        """Why the shadow must stop now (its cost, its time), else None."""
        if self.expired():
            return EXPIRED
        shadow, serving = self.ms.values(), self.serving_ms.values()
        if len(shadow) >= COST_FRAMES and median(serving) > 0 and median(shadow) > AFFORDED_MS:
            cost = median(shadow) / median(serving)  # medians: a first slow frame or a busy moment is no trend
            if cost > self.max_cost:
                return (
                    f"too costly for this device: {median(shadow):.1f} ms a frame, {cost:.1f}x the serving "
                    f"model's (updates.shadow_max_cost {self.max_cost:g})"
                )
        return None

    def state(self) -> ShadowState:
        """For the retained …/model."""
        shadow, serving = self.ms.values(), self.serving_ms.values()
        return ShadowState(
            folder=self.folder.name,
            sha256=self.sha256,
            since=round(self.since, 3),
            items=self.items,
            agreed=self.agreed,
            ms_per_frame=round(sum(shadow) / len(shadow), 3) if shadow else None,
            serving_ms_per_frame=round(sum(serving) / len(serving), 3) if serving else None,
        )
