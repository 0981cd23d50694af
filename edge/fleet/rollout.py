"""A staged rollout: a new bundle to a few bins first, judged against the rest, then to the others.

The first stage's bins (the canaries) first run the new model in the shadow of the serving one, which still
decides: on the same items, would it send them to the same bins (rule.py)? Then each stage's bins get
``update_model`` (a canary switches to the model it ran in the shadow) and are watched against the bins on the
old model: a bin offline, back on its model by itself, unhealthy, less sure, or a field that disagrees (share
of items per bin, corrections) fails the stage. The last stage is watched for health alone.

A failure, a stop from the page, SIGINT, SIGTERM or SIGHUP stop the rollout and put every bin it updated back
on the model it served when this rollout started (``reload_model`` with that bundle), and stop every shadow
it started. One rollout at a time holds the fleet, and its record on the broker (lock.py) lets the next one
finish or undo a rollout that died.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable

from edge.errors import SmartbinError
from edge.fleet.lock import FleetLock, clear_record, read_record, save_record
from edge.fleet.plan import Release, RolloutReport, StageReport, before_of, done, stage_groups, unfinished
from edge.fleet.rule import Rule, judge, judge_shadow, tally
from edge.fleet.view import DeviceView, FleetView
from edge.wire.fleet import Before, RolloutRecord
from edge.wire.payloads import Command

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The rollout was asked to stop (its ``stop`` event: a signal, a page's button); the message says how."""


class StopEvent(threading.Event):
    """A stop that says why: set by a signal handler (``reason``: which signal) or a page's button."""

    reason = "stopped"


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
        """``stop``: set from a signal handler or another thread (a page's button, a server stopping) to end the
        rollout and put its bins back (a ``StopEvent`` says why)."""
        self.view, self.release, self.rule, self.say = view, release, rule, say
        self.stop = stop or threading.Event()
        self.token = f"{int(time.time() * 1000):x}-{os.getpid()}"
        self.lock = FleetLock(view, self.token)
        self.record = RolloutRecord(
            token=self.token, owner=self.lock.owner, started=time.time(), url=release.url, sha256=release.sha256
        )
        self.health_before: dict[str, str] = {}  # device -> its health when chosen
        self.switched: dict[str, str] = {}  # device -> the folder it switched to

    @property
    def before(self) -> dict[str, Before]:
        """Each bin's model when this rollout (or the one it resumes) started: what it goes back to."""
        return self.record.before

    def save(self) -> None:
        save_record(self.view, self.record)

    def choose(
        self, only: list[str] | None = None, resumed: RolloutRecord | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The bins to update, healthy ones first (the first stage's canaries come from the front), and those
        left out with the reason. ``resumed``: a dead rollout's record, whose bins that switched stay in (first)
        and go back, if need be, to what they served before that rollout. SmartbinError when a bin that loads
        only signed bundles serves one it would not load again: its rollback would be refused."""
        fleet, skipped, unsafe = [], {}, []
        for device_id, view in sorted(self.view.snapshot().items()):
            if only is not None and device_id not in only:
                continue
            model = view.model
            earlier = resumed.before.get(device_id) if resumed else None
            if not view.online or model is None:
                skipped[device_id] = "offline" if not view.online else "has not said which model it serves"
                continue
            if earlier is not None and model.folder != earlier.folder:  # switched in the rollout resumed
                self.switched[device_id] = model.folder
            elif self.release.sha256 and model.sha256 == self.release.sha256:
                skipped[device_id] = "serves this release already"
                continue
            if model.verifies and model.signed is False:
                unsafe.append(
                    f"{device_id} loads only signed bundles and serves {model.folder}, which its key does not verify"
                )
            fleet.append(device_id)
            self.record.before[device_id] = earlier or before_of(model)
            self.health_before[device_id] = view.status.health
        if unsafe:
            raise SmartbinError(
                "; ".join(unsafe) + ": it would refuse to go back to it if the rollout fails. Sign that bundle "
                "(smartbin bundle sign) and reload it on the bin, or leave the bin out with --devices"
            )
        missing = sorted(set(only or []) - set(fleet) - set(skipped))
        skipped.update({device_id: "not heard of on the broker" for device_id in missing})
        self.record.sent = sorted(self.switched)
        fleet.sort(key=lambda d: (d not in self.switched, self.health_before[d] != "ok", d))
        return fleet, skipped

    def run(self, groups: list[list[str]], report: RolloutReport) -> RolloutReport:
        """Every stage in turn; the report says how far it went and why it stopped. Stopped (a signal, the page)
        or failed, it puts back every bin it updated and stops every shadow it started: a rollout that ends
        leaves no bin on a model nobody watches."""
        try:
            failed = self.stages(groups, report)
        except Stopped as exc:
            failed = str(exc)
        except KeyboardInterrupt:  # a caller that left SIGINT to Python
            failed = "interrupted by SIGINT"
        self.stop = threading.Event()  # the way back is not cut short by another signal
        if failed is None:
            report.completed = True
            clear_record(self.view)
            return report
        report.reason = failed
        self.record.state = "putting back"
        self.save()
        report.rolled_back = self.put_back(failed)
        return report

    def put_back(self, why: str) -> dict[str, str]:
        """Every bin this rollout moved back (those that said so, and any that switched before its answer was
        read), every shadow stopped; the record cleared once every bin is where it was."""
        views = self.view.snapshot()
        moved = [
            d for d, was in self.before.items() if d in views and views[d].model and views[d].model.folder != was.folder
        ]
        updated = sorted({*self.switched, *(d for d in moved if d in self.record.sent)})
        self.say(f"{why}; putting {', '.join(updated) or 'no bin'} back")
        outcome = self.roll_back(updated)
        self.stop_shadows(sorted(set(self.record.shadowing) - set(updated)))
        if all(what.startswith("back on") for what in outcome.values()):
            clear_record(self.view)
        else:
            self.say("not every bin is back: `smartbin fleet rollout --undo` tries again")
        return outcome

    def stages(self, groups: list[list[str]], report: RolloutReport) -> str | None:
        """The stages in turn; None when all passed, else why the first that failed did."""
        for number, group in enumerate(groups, 1):
            stage = StageReport(devices=group)
            report.stages.append(stage)
            others = [d for g in groups[number:] for d in g]
            self.say(f"stage {number}/{len(groups)}: {', '.join(group)}")
            shadow = self.shadow(group, stage) if number == 1 and others else None
            stage.reason = shadow or self.update(group) or self.watch(group, others, stage)
            if stage.reason is not None:
                return f"stage {number} failed: {stage.reason}"
            stage.passed = True
            self.say(f"stage {number} passed ({stage.watched_s:.0f} s watched)")
        return None

    # ------------------------------------------------------------------ a stage's steps
    def send(self, group: list[str], kind: str, **fields) -> dict[str, str]:
        """A command to each bin of the group (ids that say whose and what); the ids by device."""
        ids = {d: f"rollout-{self.token}-{kind}-{d}" for d in group}
        for device_id, command_id in ids.items():
            self.view.command(device_id, json.dumps(Command(id=command_id, **fields).dump()))
        return ids

    def shadow(self, group: list[str], stage: StageReport) -> str | None:
        """The canaries run the new model in the shadow of theirs for ``Rule.shadow_items`` items; None when
        it would send them to the same bins, within the rule."""
        fresh = [d for d in group if d not in self.switched]
        if not fresh or self.rule.shadow_items <= 0:
            return None
        self.record.shadowing = sorted({*self.record.shadowing, *fresh})
        self.save()
        ids = self.send(
            fresh, "shadow", action="update_model", url=self.release.url, sha256=self.release.sha256, shadow=True
        )
        failures = []
        for device_id, answer in self.finals(ids, self.rule.update_timeout_s, done).items():
            if answer is None or not answer.ok:
                failures.append(f"{device_id}: {answer.error if answer else 'no answer in time'}")
            else:
                self.say(f"  {device_id} runs {(answer.result or {}).get('model')} in the shadow of its model")
        if failures:
            return "the shadow did not start: " + "; ".join(failures)
        since, start, limit = time.time(), time.monotonic(), self.rule.watch_s * 3 + 60
        while True:
            self.pause(0.25)
            trouble = self.shadow_trouble(fresh)
            if trouble:
                return trouble
            items = self.view.shadow_items(fresh, since)
            if len(items) >= self.rule.shadow_items:
                break
            if time.monotonic() - start >= limit:
                return f"too few items in the shadow in {limit:.0f} s ({len(items)} of {self.rule.shadow_items})"
        stage.shadow = tally(items, self.rule)
        self.say(f"  shadow: {stage.shadow.line()}")
        return judge_shadow(stage.shadow, self.rule)

    def shadow_trouble(self, group: list[str]) -> str | None:
        """A bin of the group offline, or its shadow stopped (too costly for it, failed)."""
        views = self.view.snapshot()
        for device_id in group:
            view = views[device_id]
            if not view.online:
                return f"{device_id} went offline"
            shadow = view.model.shadow if view.model else None
            if shadow is not None and shadow.folder is None:
                return f"{device_id} stopped the shadow: {shadow.stopped}"
        return None

    def update(self, group: list[str]) -> str | None:
        """``update_model`` to each bin of the group; None once all have switched, else why not."""
        fresh = [d for d in group if d not in self.switched]
        self.record.sent = sorted({*self.record.sent, *fresh})
        self.save()
        ids = self.send(fresh, "update", action="update_model", url=self.release.url, sha256=self.release.sha256)
        failures = []
        for device_id, answer in self.finals(ids, self.rule.update_timeout_s, done).items():
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
            view: DeviceView = views[device_id]
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

    # ------------------------------------------------------------------ the way back
    def roll_back(self, devices: list[str]) -> dict[str, str]:
        """Each bin back on the model it served when the rollout started (one back there by itself is left as
        it is). A bin that went offline is waited for first: one that crashed inside its health window comes
        back on its old model by itself, and a command sent meanwhile would wait on the broker for nobody."""
        self.back_online(devices)
        views, back = self.view.snapshot(), []
        outcome = {}
        for device_id in devices:
            model = views[device_id].model if device_id in views else None
            if model is not None and model.folder == self.before[device_id].folder:
                outcome[device_id] = f"back on {model.folder} by itself"
            else:
                back.append(device_id)
        ids = {d: self.send([d], "back", action="reload_model", bundle=self.before[d].target)[d] for d in back}
        for device_id, answer in self.finals(ids, self.rule.update_timeout_s, lambda a: True).items():
            if answer is None:
                outcome[device_id] = "no answer to reload_model"
            else:
                was = self.before[device_id].folder
                outcome[device_id] = f"back on {was}" if answer.ok else f"refused: {answer.error}"
        for device_id, what in sorted(outcome.items()):
            self.say(f"  {device_id}: {what}")
        return outcome

    def stop_shadows(self, devices: list[str]) -> None:
        """``stop_shadow`` to bins that may still run this rollout's model in the shadow (each stops its own
        after updates.shadow_max_s anyway)."""
        if devices:
            ids = self.send(devices, "unshadow", action="stop_shadow")
            self.finals(ids, 30, lambda a: True)
            self.say(f"  shadow stopped on {', '.join(devices)}")

    def back_online(self, devices: list[str]) -> None:
        """Wait, at most the update timeout, for the offline ones of ``bins`` to say they are online."""
        offline = lambda: [d for d, v in self.view.snapshot().items() if d in devices and not v.online]  # noqa: E731
        if offline():
            self.say(f"  waiting for {', '.join(offline())} to come back online")
        deadline = time.monotonic() + self.rule.update_timeout_s
        while offline() and time.monotonic() < deadline:
            self.pause(0.25)

    def pause(self, seconds: float) -> None:
        """Wait a moment, the fleet's lock renewed; Stopped when ``stop`` is set meanwhile."""
        self.lock.renew()
        if self.stop.wait(seconds):
            raise Stopped(getattr(self.stop, "reason", "stopped"))

    def finals(self, ids: dict[str, str], timeout: float, final: Callable) -> dict:
        """Each bin's final answer to its command (None: none in time). A re-delivered command's answer (QoS 1
        may deliver twice; the bin carries it out once) is not an answer."""
        deadline, found = time.monotonic() + timeout, {}
        while len(found) < len(ids) and time.monotonic() < deadline:
            for device_id, command_id in ids.items():
                answers = [a for a in self.view.answers(device_id, command_id) if final(a) and not a.repeated]
                if answers and device_id not in found:
                    found[device_id] = answers[-1]
            self.pause(0.1)
        return {device_id: found.get(device_id) for device_id in ids}


def roll_out(
    view: FleetView,
    release: Release,
    rule: Rule,
    stages: list[str],
    canaries: list[str] | None = None,
    only: list[str] | None = None,
    say: Callable[[str], None] = log.info,
    stop: threading.Event | None = None,
    resume: bool = False,
) -> RolloutReport:
    """The release through the fleet ``view`` sees, stage by stage (``only``: just these bins); SmartbinError
    when another rollout holds the fleet, a dead one's record waits (unless ``resume`` finishes it), no bin can
    take part, or a named canary cannot."""
    rollout = Rollout(view, release, rule, say, stop)
    rollout.lock.acquire()
    try:
        record = read_record(view)
        if record is not None and not resume:
            raise SmartbinError(unfinished(record))
        if resume and record is None:
            raise SmartbinError("--resume: no unfinished rollout on this broker")
        if record is not None and release.sha256 != record.sha256:
            raise SmartbinError(
                f"--resume: the unfinished rollout's release has sha256 {record.sha256}, this one {release.sha256}"
            )
        if record is not None:
            rollout.record.shadowing, rollout.record.started = record.shadowing, record.started
        fleet, skipped = rollout.choose(only, record)
        for device_id, why in skipped.items():
            say(f"left out: {device_id} ({why})")
        for device_id in canaries or []:
            if device_id not in fleet:
                raise SmartbinError(f"the canary {device_id} cannot take part ({skipped.get(device_id)})")
        if not fleet:
            raise SmartbinError("no bin to update (see 'left out' above)")
        if rollout.switched:
            say(f"resuming: {', '.join(sorted(rollout.switched))} switched already")
            canaries = sorted(rollout.switched)
        rollout.save()
        return rollout.run(stage_groups(fleet, stages, canaries), RolloutReport(release.url, fleet, skipped))
    finally:
        rollout.lock.release()


def undo(view: FleetView, rule: Rule, say: Callable[[str], None] = log.info) -> dict[str, str]:
    """Put back the bins of a rollout that died (its record on the broker); SmartbinError when there is none
    or another rollout holds the fleet."""
    record = read_record(view)
    if record is None:
        raise SmartbinError("--undo: no unfinished rollout on this broker")
    rollout = Rollout(view, Release(record.url, record.sha256), rule, say)
    rollout.lock.acquire()
    try:
        rollout.record = record.model_copy(update={"state": "putting back"})
        rollout.save()
        return rollout.put_back(f"undoing the rollout of {record.url}")
    finally:
        rollout.lock.release()
