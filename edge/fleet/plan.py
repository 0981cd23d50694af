"""What a rollout carries and how far it got: the release, the stages' bins, the reports, and a person's
sentence about a rollout that died."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from edge.errors import SmartbinError
from edge.fleet.view import Figures, Flips
from edge.wire.fleet import Before, RolloutRecord
from edge.wire.payloads import ModelInfo


@dataclass
class Release:
    """The bundle archive as the bins fetch it (`smartbin bundle pack`)."""

    url: str
    sha256: str | None


@dataclass
class StageReport:
    devices: list[str]
    passed: bool = False
    reason: str | None = None
    watched_s: float = 0.0
    new: Figures | None = None
    old: Figures | None = None
    shadow: Flips | None = None


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


def unfinished(record: RolloutRecord) -> str:
    """A person's sentence about a dead rollout's record, and the two ways on."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
    bins = ", ".join(record.sent) or "no bin yet"
    return (
        f"an unfinished rollout of {record.url} (started {since} by {record.owner}) sent it to {bins}: "
        "`smartbin fleet rollout --undo` puts them back on what they served before it, `smartbin fleet rollout "
        "BUNDLE --resume` (the same release) finishes it"
    )


def done(answer) -> bool:
    """An update's last answer: refused, or done."""
    return not answer.ok or bool((answer.result or {}).get("done"))


def before_of(model: ModelInfo) -> Before:
    """What brings a bin back to the model it serves now: its bundle's path (older bins: what they record as
    their previous model is no help here; the store folder name, which their store resolves)."""
    return Before(folder=model.folder, target=model.bundle or model.folder)
