"""From classified frames to one decision per item.

A presence trigger keeps an empty bin from being classified forever; while an item is
present its frames vote; the winner's bin is the decision (or the default bin when the
vote is not confident); the next decision waits until the item is gone and a cooldown
has passed, so one item yields exactly one decision.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edge.formats.labels import Label

log = logging.getLogger(__name__)


@dataclass
class ItemDecision:
    """One item's verdict, as published on …/decision."""

    event_id: str
    ts: float
    bin: str
    label: str
    label_index: int
    confidence: float
    votes: int
    frames: int
    reason: str  # "vote" or "low_confidence"
    frame_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VoteSettings:
    """How frames vote for one decision (the config's ``decision`` section; checked there)."""

    vote_frames: int = 5
    min_votes: int = 2
    min_confidence: float = 0.6
    default_bin: str = "other"
    clear_frames: int = 3
    cooldown_s: float = 0.0


@dataclass(frozen=True)
class PresenceSettings:
    """The presence trigger's defaults (the config's ``presence`` section takes them from here)."""

    pixel_threshold: int = 30  # a pixel differs from the background by more than this (0-255)
    area_fraction: float = 0.02  # ... over more than this share of the view: something is there
    warmup_frames: int = 3  # frames that learn the empty bin first
    relearn_fraction: float = 0.75  # more of the view changing at once is lighting: re-learn
    max_item_s: float = 15.0  # something in view longer becomes the background


PRESENCE = PresenceSettings()
RELEARN_SETTLE_S = 5.0  # after a re-learn the background follows the view fast for this long (lights warm up)
SETTLE_LEARN_RATE = 0.5


class PresenceDetector:
    """Is something in the bin? Compares each frame with a learned empty-bin background.

    The background follows slow lighting changes of the empty bin. Two things would otherwise make it
    say "present" forever: a sudden change of most of the view at once (a light switched on), which
    re-learns the background at once, and something left in view longer than ``max_item_s`` (a bag),
    which becomes the background, while the empty bin from before is kept: when the view matches it
    again (the bag is taken away) it comes back at once, without a phantom item.
    """

    def __init__(
        self,
        pixel_threshold: int = PRESENCE.pixel_threshold,
        area_fraction: float = PRESENCE.area_fraction,
        learn_rate: float = 0.05,
        warmup_frames: int = PRESENCE.warmup_frames,
        size: tuple[int, int] = (64, 48),
        relearn_fraction: float = PRESENCE.relearn_fraction,
        max_item_s: float = PRESENCE.max_item_s,
    ):
        self.pixel_threshold = pixel_threshold
        self.area_fraction = area_fraction
        self.learn_rate = learn_rate
        self.warmup_frames = warmup_frames
        self.size = size
        self.relearn_fraction = relearn_fraction
        self.max_item_s = max_item_s
        self.background: np.ndarray | None = None
        self.previous: np.ndarray | None = None  # the empty bin before something left in view was learned
        self.seen = 0
        self.present_since: float | None = None
        self.settle_until: float | None = None
        self.relearns = 0
        self.last_relearn: dict | None = None  # {"ts", "reason"}

    def _small(self, frame: np.ndarray) -> np.ndarray:
        # Colour, not grey: a red can on a grey floor can have the floor's brightness.
        small = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)

    def _changed(self, small: np.ndarray, background: np.ndarray) -> float:
        return float((np.abs(small - background).max(axis=2) > self.pixel_threshold).mean())

    def state(self, now: float | None = None) -> str:
        """``learning`` (warm-up, or settling after a re-learn), ``item`` or ``empty``."""
        now = time.monotonic() if now is None else now
        if self.seen <= self.warmup_frames or (self.settle_until is not None and now < self.settle_until):
            return "learning"
        return "item" if self.present_since is not None else "empty"

    def relearning(self) -> bool:
        """Settling after a re-learn (not the first warm-up): the status says degraded meanwhile."""
        return self.relearns > 0 and self.state() == "learning"

    def summary(self) -> dict:
        """For status and metrics: what presence sees now and the last re-learn."""
        return {"state": self.state(), "relearns": self.relearns, "last_relearn": self.last_relearn}

    def _relearn(self, small: np.ndarray, now: float, reason: str, keep_previous: bool) -> None:
        log.warning("presence: re-learning the empty bin: %s", reason)
        self.previous = self.background if keep_previous else None
        self.background = small
        self.present_since = None
        self.settle_until = now + RELEARN_SETTLE_S
        self.relearns += 1
        self.last_relearn = {"ts": round(time.time(), 3), "reason": reason}

    def update(self, frame: np.ndarray, now: float | None = None) -> bool:
        """True when an item is present. The first ``warmup_frames`` frames are taken as the empty bin."""
        now = time.monotonic() if now is None else now
        small = self._small(frame)
        self.seen += 1
        if self.background is None or self.seen <= self.warmup_frames:
            self.background = small if self.background is None else (self.background + small) / 2
            return False
        if self.settle_until is not None:
            if now < self.settle_until:
                self.background += SETTLE_LEARN_RATE * (small - self.background)
                return False
            self.settle_until = None
        changed = self._changed(small, self.background)
        if changed > self.relearn_fraction:
            self._relearn(small, now, f"{changed:.0%} of the view changed at once (lighting?)", keep_previous=False)
            return False
        present = changed > self.area_fraction
        if present and self.previous is not None and self._changed(small, self.previous) <= self.area_fraction:
            log.info("presence: the empty bin from before is back")
            self.background, self.previous = self.previous, None
            present = False
        if not present:
            self.present_since = None
            self.background += self.learn_rate * (small - self.background)  # slow lighting changes of the empty bin
            return False
        self.present_since = self.present_since if self.present_since is not None else now
        if now - self.present_since > self.max_item_s:
            held = now - self.present_since
            reason = f"something in view for {held:.0f} s, longer than presence.max_item_s ({self.max_item_s:g} s)"
            self._relearn(small, now, reason, keep_previous=True)
            return False
        return True


class Decider:
    """The vote. Feed it every frame's presence and (when present) its top label and confidence."""

    def __init__(self, labels: list[Label], config: VoteSettings | None = None):
        self.labels = labels
        self.config = config or VoteSettings()
        self.votes: list[tuple[int, float, int]] = []  # (label index, confidence, frame id)
        self.decided = False
        self.absent_run = 0
        self.gone_at: float | None = None

    def reset(self) -> None:
        """Forget the item in view as if it had left: the next present frame starts a new vote."""
        self.votes, self.decided = [], False

    def wants_classification(self, now: float) -> bool:
        """Whether a present frame now would vote (otherwise it need not be classified)."""
        return not self.decided and not self._cooling(now)

    def _cooling(self, now: float) -> bool:
        return self.gone_at is not None and now - self.gone_at < self.config.cooldown_s

    def update(
        self, present: bool, now: float, vote: tuple[int, float] | None = None, frame_id: int = 0
    ) -> ItemDecision | None:
        cfg = self.config
        if not present:
            self.absent_run += 1
            if self.absent_run < cfg.clear_frames:
                return None
            decision = None
            if not self.decided and len(self.votes) >= cfg.min_votes:
                decision = decide(self.labels, self.config, self.votes)  # the item left before the window filled
            if self.decided or self.votes:
                self.gone_at = now
            self.reset()
            return decision
        self.absent_run = 0
        if self.decided or self._cooling(now):
            return None
        if vote is not None:
            self.votes.append((vote[0], vote[1], frame_id))
        if len(self.votes) >= cfg.vote_frames:
            self.decided = True
            return decide(self.labels, self.config, self.votes)
        return None


def decide(labels: list[Label], cfg: VoteSettings, votes: list[tuple[int, float, int]]) -> ItemDecision:
    """The decision that frames' (label index, confidence, frame id) votes make: the most voted label, sure
    enough, else the default bin. The shadow of a new model decides by it too, on the same frames."""
    counts = Counter(index for index, _, _ in votes)
    winner, count = counts.most_common(1)[0]
    confidence = float(np.mean([c for i, c, _ in votes if i == winner])) * count / len(votes)
    label = labels[winner]
    confident = confidence >= cfg.min_confidence
    return ItemDecision(
        event_id=uuid.uuid4().hex,
        ts=time.time(),
        bin=label.bin if confident else cfg.default_bin,
        label=label.name if confident else "unknown",
        label_index=winner if confident else -1,
        confidence=round(confidence, 4),
        votes=count,
        frames=len(votes),
        reason="vote" if confident else "low_confidence",
        frame_ids=[f for _, _, f in votes],
    )
