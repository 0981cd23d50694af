"""`make field-day`: a bin's first month, compressed into minutes, with the real parts.

    python tests/scenarios/field_day.py --bundle BUNDLE [--scale 1.0]

The real daemon and the real actuator process (gpiozero's mock pins) against mosquitto, watching a
network camera (ffmpeg serving a multipart-JPEG stream, as IP cameras do) that plays a scripted day:
items dropped every few seconds, a light switched on, a bag left in view. Meanwhile the field happens
to it: a broker outage, an actuator restart, the camera lost, a broker that refuses decisions for a while
(its ACL), the daemon SIGKILLed (and restarted, as systemd's Restart= would; tests/system/test_real_systemd.py
covers systemd itself), and all along a `pause` command an operator's tool left retained.

Prints items dropped, decisions published, decisions delivered after the outage, flap moves against
decisions acknowledged fresh (and stale moves, which must be 0), decisions lost (0), presence
re-learns, decisions the broker refused (delivered later), fresh decisions refused as stale (0), how
often the retained pause was answered and carried out (0), and the health states seen with their times.
Exits 1 when a stale move, a lost decision, a fresh one refused or a retained command carried out is
found. ``--scale`` shortens every period (the CI test runs 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.sources.scene import add_noise, draw_item, empty_floor  # noqa: E402
from edge.tools.localbroker import LocalBroker, free_port  # noqa: E402
from edge.vision.decision import RELEARN_SETTLE_S  # noqa: E402
from tests.scenarios.fuzz import tail  # noqa: E402
from tests.support import ROOT, write_config  # noqa: E402
from tests.support.mqtt_client import Subscriber, unique_decisions  # noqa: E402
from tests.support.servers.mjpeg import MjpegCamera  # noqa: E402

DEVICE = "field-bin"
FPS = 10
MAX_AGE_S = 2.0
HOLD_S = 0.2
PAUSE = "tool-pause"


@dataclass
class Day:
    """The script, in seconds from the start; every period scaled by ``scale``."""

    scale: float = 1.0
    item_every_s: float = 3.0
    item_in_view_s: float = 1.2
    classes: int = 4

    def __post_init__(self) -> None:
        s = self.scale
        self.outage = (8 * s, 8 * s + 30 * s)  # the broker is down
        self.actuator_down = (self.outage[1] + 6 * s, self.outage[1] + 14 * s)
        self.light_on = self.actuator_down[1] + 6 * s  # +45 grey levels from here on
        self.max_item_s = max(4.0, 8 * s)
        settled = self.light_on + RELEARN_SETTLE_S + 3 * s  # the new light learned, items seen again
        self.bag = (settled, settled + self.max_item_s + 6)  # left in view
        self.camera_lost = (self.bag[1] + 6 * s, self.bag[1] + 6 * s + 20 * s)
        # the broker refuses decisions (an ACL that no longer lets the bin publish them), then accepts them
        self.refused = (self.camera_lost[1], self.camera_lost[1] + 10 * s)
        self.kill = self.refused[1] + 2 * s
        self.end = self.kill + 15 * s

    def items(self) -> list[tuple[float, int]]:
        """(drop time, class) of every item, none while the bag lies there."""
        out, t, i = [], 2.0, 0
        while t + self.item_in_view_s < self.end:
            if not (self.bag[0] - self.item_every_s < t < self.bag[1] + 1):
                out.append((t, i % self.classes))
                i += 1
            t += self.item_every_s
        return out

    def render(self, path: Path, size: tuple[int, int] = (320, 240)) -> int:
        """The whole day as a clip (what the camera sees, lost or not); returns the frames written."""
        rng = np.random.default_rng(7)
        width, height = size
        floor = empty_floor(height, width, seed=3)
        items = self.items()
        canvases = {cls: draw_item(floor.copy(), cls, self.classes, np.random.default_rng(cls)) for cls in range(4)}
        bag = draw_item(floor.copy(), 1, self.classes, np.random.default_rng(99), scale=0.5)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, size)
        frames = int(self.end * FPS)
        for n in range(frames):
            t = n / FPS
            view = floor
            if self.bag[0] <= t < self.bag[1]:
                view = bag
            for start, cls in items:
                if start <= t < start + self.item_in_view_s:
                    view = canvases[cls]
            if t >= self.light_on:
                view = np.clip(view.astype(np.int16) + 45, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(add_noise(view, rng, 2), cv2.COLOR_RGB2BGR))
        writer.release()
        return frames


@dataclass
class Report:
    items_dropped: int = 0
    items_in_view: int = 0
    decisions_made: int = 0
    decisions_published: int = 0
    delivered_after_outage: int = 0
    flap_moves: int = 0
    acknowledged_fresh: int = 0
    acknowledged_stale: int = 0
    stale_moves: int = 0
    decisions_lost: int = 0
    relearns: int = 0
    refused_by_broker: int = 0
    fresh_refused_as_stale: int = 0
    retained_answered: int = 0
    retained_carried_out: int = 0
    health: list[tuple[float, str]] = field(default_factory=list)

    def summary(self) -> str:
        states = ", ".join(f"{h} at {t:.0f} s" for t, h in self.health)
        return (
            f"field day: items dropped {self.items_dropped} ({self.items_in_view} while the camera was there), "
            f"decisions made {self.decisions_made}, published {self.decisions_published}, delivered after the "
            f"broker outage {self.delivered_after_outage}; flap moves {self.flap_moves} = decisions acknowledged "
            f"fresh {self.acknowledged_fresh}, refused as stale {self.acknowledged_stale}, stale moves "
            f"{self.stale_moves}; decisions lost {self.decisions_lost}; presence re-learns {self.relearns}\n"
            f"refused by the broker {self.refused_by_broker} (kept, delivered later); fresh decisions refused as "
            f"stale {self.fresh_refused_as_stale}; a retained pause answered {self.retained_answered} times, "
            f"carried out {self.retained_carried_out}\n"
            f"health seen: {states}"
        )


class Processes:
    """The daemon and the actuator as subprocesses, their logs kept for a failure report."""

    def __init__(self, work: Path, config: Path):
        self.work, self.config = work, config
        self.daemon: subprocess.Popen | None = None
        self.actuator: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def _start(self, args: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        log = self.work / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "edge.cli", *args, "--config", str(self.config)],
                cwd=ROOT,
                stderr=err,
                env={**os.environ, **(env or {})},
            )

    def tails(self) -> str:
        """The last lines of every log (the daemon's, the actuator's, the broker's): why a day failed."""
        return "\n".join(f"{log.name}:\n{tail(log, 30)}" for log in self.logs)

    def start_daemon(self) -> None:
        self.daemon = self._start(["run"], "daemon")

    def start_actuator(self) -> None:
        self.actuator = self._start(["actuator"], "actuator", {"GPIOZERO_PIN_FACTORY": "mock"})

    @staticmethod
    def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(20)


def acl(path: Path, decisions: bool) -> None:
    """Anonymous clients may do anything, publish decisions only when ``decisions``. The grant is a ``pattern``
    line: mosquitto 2.0 checks an anonymous ``topic`` line against a session restored after a restart as a
    denial, and keeps nothing for it until its client is back (docs/mqtt.md)."""
    path.write_text("pattern readwrite #\n" + ("" if decisions else "topic deny smartbin/+/decision\n"))


def at(t0: float, when: float) -> None:
    """Sleep until ``when`` seconds after ``t0``."""
    time.sleep(max(0.0, t0 + when - time.monotonic()))


def run_day(bundle: Path, scale: float, work: Path) -> tuple[Report, Processes]:
    day = Day(scale=scale)
    clip = work / "day.avi"
    day.render(clip)
    rules = work / "acl"
    acl(rules, decisions=True)
    broker = LocalBroker(workdir=work / "broker", extra_config=f"acl_file {rules}\n").start()
    camera = MjpegCamera(clip, free_port())
    config = write_config(
        work / "config.yaml",
        bundle.resolve(),
        camera.url,
        broker.port,
        device_id=DEVICE,
        presence__max_item_s=day.max_item_s,
        source__reconnect_max_s=1.0,
        source__stall_timeout_s=3.0,
        source__frozen_after_s=5.0,
        actuator__mode="pins",
        actuator__hold_s=HOLD_S,
        actuator__max_age_s=MAX_AGE_S,
        actuator__state_path=str(work / "actuator.sqlite"),
    )
    run = Processes(work, config)
    run.logs.append(broker.log_path)
    # a persistent watcher: nothing published while the broker restarts is missed
    sub = Subscriber(broker.port, f"smartbin/{DEVICE}/#", client_id="field-day-watcher", persistent=True)
    try:
        # an operator's tool left `pause` retained: answered at every start and reconnect, never carried out
        sub.publish(f"smartbin/{DEVICE}/command", json.dumps({"id": PAUSE, "action": "pause"}), retain=True)
        camera.start()
        run.start_daemon()
        run.start_actuator()
        assert sub.wait_for("classification", timeout=90), "the daemon did not start classifying"
        t0 = camera.t0  # the clip's time: the day's script runs on it
        at(t0, day.outage[0])
        broker.stop()
        at(t0, day.outage[1])
        broker.start()
        outage = (time.time() - (day.outage[1] - day.outage[0]), time.time())
        at(t0, day.actuator_down[0])
        Processes.stop(run.actuator)
        at(t0, day.actuator_down[1])
        run.start_actuator()
        at(t0, day.camera_lost[0])
        camera.lose()
        at(t0, day.camera_lost[1])
        camera.restore()
        at(t0, day.refused[0])
        acl(rules, decisions=False)
        broker.process.send_signal(signal.SIGHUP)  # mosquitto reads its ACL file again
        at(t0, day.refused[1])
        acl(rules, decisions=True)
        broker.process.send_signal(signal.SIGHUP)
        at(t0, day.kill)
        Processes.stop(run.daemon, signal.SIGKILL)
        time.sleep(1.0)  # systemd's RestartSec
        run.start_daemon()
        at(t0, day.end)
        Processes.stop(run.daemon)
        time.sleep(MAX_AGE_S)  # the last acks
    finally:
        Processes.stop(run.daemon)
        Processes.stop(run.actuator)
        camera.stop()
        sub.close()
        broker.close()
    return report(day, work, sub, t0, outage), run


def report(day: Day, work: Path, sub: Subscriber, t0: float, outage: tuple[float, float]) -> Report:
    decisions = {d["event_id"]: d for d in unique_decisions(sub.on("decision"))}
    acks = [m.json() for m in sub.on("ack") if m.json().get("event_id")]
    moves = [a for a in acks if a["ok"] and not a["duplicate"]]
    health: list[tuple[float, str]] = []
    for m in sub.on("status"):
        if m.json()["state"] == "online" and (not health or health[-1][1] != m.json()["health"]):
            health.append((m.at - t0, m.json()["health"]))
    broker_back = t0 + day.outage[1]
    counted = sqlite3.connect(work / "counters.sqlite").execute("SELECT SUM(n) FROM counts WHERE kind = 'reason'")
    made = int(counted.fetchone()[0] or 0)
    metrics = [m.json() for m in sub.on("metrics")]
    lost_at = day.camera_lost
    pause = [m.json() for m in sub.on("command/result") if m.json().get("id") == PAUSE]
    in_view = [t for t, _ in day.items() if not lost_at[0] <= t <= lost_at[1]]
    return Report(
        items_dropped=len(day.items()),
        items_in_view=len(in_view),
        decisions_made=made,
        decisions_published=len(decisions),
        delivered_after_outage=sum(
            1 for m in first_arrivals(sub) if outage[0] <= m.json()["ts"] < outage[1] and m.at >= broker_back
        ),
        flap_moves=len(moves),
        acknowledged_fresh=sum(1 for a in acks if not a["stale"] and not a["duplicate"] and a["ok"]),
        acknowledged_stale=sum(1 for a in acks if a["stale"]),
        # a move for a decision older than max_age_s when the flap moved (one host here: one clock; both
        # times travel to the millisecond)
        stale_moves=sum(
            1
            for a in moves
            if a["event_id"] in decisions and a["moved_at"] - decisions[a["event_id"]]["ts"] > MAX_AGE_S + 0.002
        ),
        decisions_lost=max(0, made - len(decisions)),
        relearns=sum(max((m["presence"] or {}).get("relearns", 0) for m in part) for part in _runs(metrics)),
        refused_by_broker=sum(max(m.get("outbox_refused", 0) for m in part) for part in _runs(metrics)),
        # refused as stale when it was made less than half of max_age_s before (one host here: one clock)
        fresh_refused_as_stale=sum(
            1
            for a in acks
            if a["stale"] and a["event_id"] in decisions and a["ts"] - decisions[a["event_id"]]["ts"] < MAX_AGE_S / 2
        ),
        retained_answered=len(pause),
        retained_carried_out=sum(1 for answer in pause if answer["ok"]),
        health=health,
    )


def first_arrivals(sub: Subscriber) -> list:
    """Each decision's first delivery (QoS 1 may deliver one twice)."""
    seen: set[str] = set()
    out = []
    for m in sub.on("decision"):
        if m.json()["event_id"] not in seen:
            seen.add(m.json()["event_id"])
            out.append(m)
    return out


def _runs(metrics: list[dict]) -> list[list[dict]]:
    """Metrics split per daemon process (uptime starts again after the restart)."""
    runs: list[list[dict]] = []
    for m in metrics:
        if not runs or m["uptime_s"] < runs[-1][-1]["uptime_s"]:
            runs.append([])
        runs[-1].append(m)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="every period times this (CI: 0.5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartbin-field-day-") as tmp:
        result, run = run_day(Path(args.bundle), args.scale, Path(tmp))
        sys.stdout.write(result.summary() + "\n")
        failed = result.stale_moves or result.decisions_lost or result.fresh_refused_as_stale
        failed = failed or result.retained_carried_out
        if failed:
            sys.stdout.write(run.tails() + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
