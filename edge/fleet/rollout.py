"""A staged rollout: a new bundle to a few bins first, judged against the rest, then to the others.

Each stage sends ``update_model`` to its bins and waits for each to switch (a bin refuses a bundle that fails
its own checks, and keeps its model). Then it watches them for ``Rule.watch_s``, and at least
``Rule.min_frames`` classified frames on each side, against the bins still on the old model: the stage fails
when a bin goes offline, rolls back by itself (its health window), turns unhealthy, or is less sure than the
others by more than the rule allows (mean confidence of its frames; share of its items too unsure to sort).
A failure stops the rollout and puts every bin it updated back on the model it had (``reload_model`` with
what the bin's retained ``…/model`` names as its previous one). The last stage, with no bins left to compare
against, is watched for health alone.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edge.errors import SmartbinError
from edge.fleet.view import BinView, Figures, FleetView
from edge.wire.payloads import Command

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The rollout was asked to stop (Rollout's ``stop`` event)."""


@dataclass
class Rule:
    """When a stage passes: how long it is watched, on how much, and how much less sure it may be."""

    watch_s: float = 300.0
    min_frames: int = 100
    max_confidence_drop: float = 0.10
    max_unsure_rise: float = 0.20
    update_timeout_s: float = 600.0


@dataclass
class Release:
    """The bundle archive as the bins fetch it (`smartbin bundle pack`)."""

    url: str
    sha256: str | None


@dataclass
class StageReport:
    bins: list[str]
    passed: bool = False
    reason: str | None = None
    watched_s: float = 0.0
    new: Figures | None = None
    old: Figures | None = None


@dataclass
class RolloutReport:
    url: str
    fleet: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    stages: list[StageReport] = field(default_factory=list)
    completed: bool = False
    reason: str | None = None
    rolled_back: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_stages(spec: str) -> list[str]:
    """``1,25%`` -> ['1', '25%']: each a bin count or a share of the fleet, reached cumulatively."""
    stages = [part.strip() for part in spec.split(",") if part.strip()]
    for stage in stages:
        number = stage[:-1] if stage.endswith("%") else stage
        if not number.replace(".", "", 1).isdigit() or float(number) <= 0:
            raise SmartbinError(f"--stages: {stage!r} is not a bin count or a share like 25% (e.g. --stages 1,25%)")
    return stages


def stage_groups(fleet: list[str], stages: list[str], canaries: list[str] | None = None) -> list[list[str]]:
    """The bins of each stage, in order, the last stage taking every bin left. Named ``canaries`` are the
    first stage, in place of the first of ``stages``."""
    order = [*(canaries or []), *(d for d in fleet if d not in (canaries or []))]
    groups, done = [], 0
    if canaries:
        groups, done, stages = [list(canaries)], len(canaries), stages[1:]
    for stage in stages:
        target = math.ceil(len(fleet) * float(stage[:-1]) / 100) if stage.endswith("%") else int(float(stage))
        target = min(max(target, done + 1), len(fleet))
        if target > done:
            groups.append(order[done:target])
            done = target
    if done < len(fleet):
        groups.append(order[done:])
    return groups


class Rollout:
    """Carries one release through a fleet's stages; ``say`` hears every step, in a sentence."""

    def __init__(
        self,
        view: FleetView,
        release: Release,
        rule: Rule,
        say: Callable[[str], None] = log.info,
        stop: threading.Event | None = None,
    ):
        """``stop``: set from another thread (a page's button, a server stopping) to end the rollout as a Ctrl-C
        does."""
        self.view, self.release, self.rule, self.say = view, release, rule, say
        self.stop = stop or threading.Event()
        self.token = f"{int(time.time() * 1000):x}"
        self.before: dict[str, str] = {}  # device -> the store folder it served before this rollout
        self.health_before: dict[str, str] = {}  # device -> its health then
        self.switched: dict[str, str] = {}  # device -> the folder it switched to

    def choose(self, only: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        """The bins to update, healthy ones first (the first stage's canaries come from the front), and those
        left out with the reason."""
        fleet, skipped = [], {}
        for device_id, view in sorted(self.view.snapshot().items()):
            if only is not None and device_id not in only:
                continue
            if not view.online or view.model is None:
                skipped[device_id] = "offline" if not view.online else "has not said which model it serves"
            elif self.release.sha256 and view.model.sha256 == self.release.sha256:
                skipped[device_id] = "serves this release already"
            else:
                fleet.append(device_id)
                self.before[device_id] = view.model.folder
                self.health_before[device_id] = view.status.health
        missing = sorted(set(only or []) - set(fleet) - set(skipped))
        skipped.update({device_id: "not heard of on the broker" for device_id in missing})
        fleet.sort(key=lambda d: (self.health_before[d] != "ok", d))
        return fleet, skipped

    def run(self, groups: list[list[str]], report: RolloutReport) -> RolloutReport:
        """Every stage in turn; the report says how far it went and why it stopped. Interrupted (Ctrl-C, or
        SIGINT from a script), it puts back every bin it updated: a rollout stopped half-way leaves no bin on
        a model nobody watches."""
        try:
            failed = self.stages(groups, report)
        except (KeyboardInterrupt, Stopped) as exc:
            self.stop.clear()  # the rollback's own waits go on
            failed = "stopped" if isinstance(exc, Stopped) else "interrupted"
        if failed is None:
            report.completed = True
            return report
        report.reason = failed
        # every bin this rollout moved: those that said so, and any that switched before its answer was read
        views = self.view.snapshot()
        moved = [d for d, folder in self.before.items() if views[d].model and views[d].model.folder != folder]
        updated = sorted({*self.switched, *moved})
        self.say(f"{failed}; putting {', '.join(updated) or 'no bin'} back")
        report.rolled_back = self.roll_back(updated)
        return report

    def stages(self, groups: list[list[str]], report: RolloutReport) -> str | None:
        """The stages in turn; None when all passed, else why the first that failed did."""
        for number, group in enumerate(groups, 1):
            stage = StageReport(bins=group)
            report.stages.append(stage)
            others = [d for g in groups[number:] for d in g]
            self.say(f"stage {number}/{len(groups)}: {', '.join(group)}")
            stage.reason = self.update(group) or self.watch(group, others, stage)
            if stage.reason is not None:
                return f"stage {number} failed: {stage.reason}"
            stage.passed = True
            self.say(f"stage {number} passed ({stage.watched_s:.0f} s watched)")
        return None

    # ------------------------------------------------------------------ a stage's steps
    def update(self, group: list[str]) -> str | None:
        """``update_model`` to each bin of the group; None once all have switched, else why not."""
        ids = {d: f"rollout-{self.token}-{d}" for d in group}
        for device_id, command_id in ids.items():
            command = Command(id=command_id, action="update_model", url=self.release.url, sha256=self.release.sha256)
            self.view.command(device_id, json.dumps(command.dump()))
        finals = self.finals(ids, self.rule.update_timeout_s, lambda a: not a.ok or bool((a.result or {}).get("done")))
        failures = []
        for device_id, answer in finals.items():
            if answer is None:
                failures.append(f"{device_id} did not finish the update in {self.rule.update_timeout_s:.0f} s")
            elif not answer.ok:
                failures.append(f"{device_id}: {answer.error}")
            else:
                self.switched[device_id] = str((answer.result or {}).get("model"))
                self.say(f"  {device_id} switched to {self.switched[device_id]}")
        return "; ".join(failures) or None

    def watch(self, group: list[str], others: list[str], stage: StageReport) -> str | None:
        """Watch the group beside the others; None when it passes the rule."""
        rule, start, mark = self.rule, time.monotonic(), self.view.mark()
        limit = rule.watch_s * 3 + 60  # beyond this with too little to judge by, the stage fails
        while True:
            self.pause(0.25)
            stage.watched_s = time.monotonic() - start
            trouble = self.trouble(group)
            if trouble:
                return trouble
            stage.new = self.view.figures(group, mark)
            stage.old = self.view.figures(others, mark) if others else None
            enough = not others or min(stage.new.frames, stage.old.frames) >= rule.min_frames
            if stage.watched_s >= rule.watch_s and enough:
                break
            if stage.watched_s >= limit:
                return (
                    f"too little to judge by in {limit:.0f} s (fewer than {rule.min_frames} classified frames a side)"
                )
        self.say(f"  new model: {stage.new.line()}")
        if stage.old is None:
            return None
        self.say(f"  old model: {stage.old.line()}")
        return judge(stage.new, stage.old, rule)

    def trouble(self, group: list[str]) -> str | None:
        """A bin of the group offline, back on another model by itself, or less healthy than before the rollout."""
        views = self.view.snapshot()
        for device_id in group:
            view: BinView = views[device_id]
            if not view.online:
                return f"{device_id} went offline"
            if view.model is not None and view.model.folder != self.switched.get(device_id):
                change = view.model.last_change
                why = f": {change.reason}" if change and change.reason else ""
                return f"{device_id} left the new model by itself (now {view.model.folder}){why}"
            health = view.status.health if view.status else None
            if health != "ok" and self.health_before.get(device_id) == "ok":
                return f"{device_id} reports {health} since the update"
        return None

    def roll_back(self, bins: list[str]) -> dict[str, str]:
        """Each bin back on the folder it served before (one the bin left by itself is left as it is). A bin that
        went offline is waited for first: one that crashed inside its health window comes back on its old model
        by itself, and a command sent meanwhile would wait on the broker for nobody."""
        self.back_online(bins)
        views, ids = self.view.snapshot(), {}
        outcome = {}
        for device_id in bins:
            model = views[device_id].model if device_id in views else None
            if model is not None and model.folder == self.before[device_id]:
                outcome[device_id] = f"back on {self.before[device_id]} by itself"
                continue
            # what the bin itself recorded as the model before the switch: a store folder, or the path of a
            # bundle its config named (which no store name reaches)
            target = model.previous if model is not None and model.previous else self.before[device_id]
            ids[device_id] = f"rollout-{self.token}-back-{device_id}"
            command = Command(id=ids[device_id], action="reload_model", bundle=target)
            self.view.command(device_id, json.dumps(command.dump()))
        for device_id, answer in self.finals(ids, self.rule.update_timeout_s, lambda a: True).items():
            if answer is None:
                outcome[device_id] = "no answer to reload_model"
            else:
                outcome[device_id] = f"back on {self.before[device_id]}" if answer.ok else f"refused: {answer.error}"
        for device_id, what in sorted(outcome.items()):
            self.say(f"  {device_id}: {what}")
        return outcome

    def back_online(self, bins: list[str]) -> None:
        """Wait, at most the update timeout, for the offline ones of ``bins`` to say they are online."""
        offline = lambda: [d for d, v in self.view.snapshot().items() if d in bins and not v.online]  # noqa: E731
        if offline():
            self.say(f"  waiting for {', '.join(offline())} to come back online")
        deadline = time.monotonic() + self.rule.update_timeout_s
        while offline() and time.monotonic() < deadline:
            self.pause(0.25)

    def pause(self, seconds: float) -> None:
        """Wait a moment; Stopped when ``stop`` is set meanwhile."""
        if self.stop.wait(seconds):
            raise Stopped

    def finals(self, ids: dict[str, str], timeout: float, final: Callable) -> dict:
        """Each bin's final answer to its command (None: none in time)."""
        deadline, found = time.monotonic() + timeout, {}
        while len(found) < len(ids) and time.monotonic() < deadline:
            for device_id, command_id in ids.items():
                answers = [a for a in self.view.answers(device_id, command_id) if final(a)]
                if answers and device_id not in found:
                    found[device_id] = answers[-1]
            self.pause(0.1)
        return {device_id: found.get(device_id) for device_id in ids}


def judge(new: Figures, old: Figures, rule: Rule) -> str | None:
    """None when the new model's bins are as sure as the old ones' within the rule, else why not."""
    if new.mean_confidence is not None and old.mean_confidence is not None:
        drop = old.mean_confidence - new.mean_confidence
        if drop > rule.max_confidence_drop:
            return (
                f"mean confidence {new.mean_confidence:.3f} on the new model against {old.mean_confidence:.3f} on the "
                f"old (down {drop:.3f}, the rule allows {rule.max_confidence_drop:.3f})"
            )
    if new.low_confidence_share is not None and old.low_confidence_share is not None:
        rise = new.low_confidence_share - old.low_confidence_share
        if rise > rule.max_unsure_rise:
            return (
                f"{new.low_confidence_share:.0%} of items too unsure to sort on the new model against "
                f"{old.low_confidence_share:.0%} on the old (the rule allows {rule.max_unsure_rise:.0%} more)"
            )
    return None


def roll_out(
    view: FleetView,
    release: Release,
    rule: Rule,
    stages: list[str],
    canaries: list[str] | None = None,
    only: list[str] | None = None,
    say: Callable[[str], None] = log.info,
    stop: threading.Event | None = None,
) -> RolloutReport:
    """The release through the fleet ``view`` sees, stage by stage (``only``: just these bins); SmartbinError
    when no bin can take part, or a named canary cannot."""
    rollout = Rollout(view, release, rule, say, stop)
    fleet, skipped = rollout.choose(only)
    for device_id, why in skipped.items():
        say(f"left out: {device_id} ({why})")
    for device_id in canaries or []:
        if device_id not in fleet:
            raise SmartbinError(f"the canary {device_id} cannot take part ({skipped.get(device_id)})")
    if not fleet:
        raise SmartbinError("no bin to update (see 'left out' above)")
    return rollout.run(stage_groups(fleet, stages, canaries), RolloutReport(release.url, fleet, skipped))
