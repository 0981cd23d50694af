"""`make fuzz`: thousands of hostile payloads to a running daemon over the real broker.

    python tests/scenarios/fuzz.py --bundle BUNDLE [--payloads 10000] [--seed 0]

Sends random bytes, random text, random JSON, valid commands with hostile values, oversize
payloads and messages on topics next to the command topic. Every payload on the command topic
must be answered on …/command/result (carried out or refused), the daemon must stay alive, and
classification must go on throughout. Prints the counts; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.tools.localbroker import LocalBroker  # noqa: E402
from edge.wire.command_spec import ACTIONS, MAX_PAYLOAD  # noqa: E402
from tests.support import ROOT, write_config  # noqa: E402
from tests.support.mqtt_client import Subscriber  # noqa: E402

DEVICE = "fuzz-bin"
COMMAND_TOPIC = f"smartbin/{DEVICE}/command"
# Topics beside the command topic: the daemon must ignore them (no answer, no crash).
OTHER_TOPICS = (
    f"smartbin/{DEVICE}/command/extra",
    f"smartbin/{DEVICE}/commands",
    f"smartbin/{DEVICE}/status",
    "smartbin/other-bin/command",
    f"smartbin/{DEVICE}",
)
# pause is left out: a paused bin stops classifying by design, and this run checks that it does not.
SAFE_ACTIONS = [a for a in ACTIONS if a != "pause"]
HOSTILE_VALUES: list = [
    None, True, -1, 2, 1e308, -1e308, float("nan"), float("inf"), "0.5", "", "\x00", [], {}, [0.5],
    {"value": 0.5}, 10**40, "../../../../etc/passwd", "/dev/zero", "/", "~", "\u202e", "x" * 3000, 0, 1, 0.5,
]  # fmt: skip


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(random_json(rng, 4)): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def hostile_command(rng: random.Random) -> dict:
    command: dict = {"id": rng.choice([rng.randrange(10**6), "x", None, 1.5, [], {}, True, "\x00" * 8])}
    command["action"] = rng.choice(SAFE_ACTIONS + ["", "PING", "reboot", "pause ", 7, None])
    for key in rng.sample(["value", "bundle", "extra", "id"], rng.randrange(3)):
        command[key] = rng.choice(HOSTILE_VALUES)
    return command


def payload(rng: random.Random) -> tuple[str, bytes, str]:
    """(topic, payload, kind) for one fuzzing message."""
    kind = rng.choice(("binary", "text", "json", "command", "command", "oversize", "other_topic"))
    if kind == "binary":
        data = rng.randbytes(rng.randrange(300))
    elif kind == "text":
        data = "".join(chr(rng.randrange(1, 0x10FFFF)) for _ in range(rng.randrange(60))).encode("utf-8", "replace")
    elif kind == "json":
        data = json.dumps(random_json(rng)).encode()
    elif kind == "command":
        data = json.dumps(hostile_command(rng)).encode()
    elif kind == "oversize":
        data = b'{"id": 1, "action": "ping", "pad": "' + b"x" * rng.randrange(MAX_PAYLOAD, 4 * MAX_PAYLOAD) + b'"}'
    else:
        return rng.choice(OTHER_TOPICS), json.dumps(hostile_command(rng)).encode(), kind
    return COMMAND_TOPIC, data, kind


@dataclass
class FuzzReport:
    sent: int = 0
    other_topics: int = 0
    answered_ok: int = 0
    refused: int = 0
    classifications: list[int] = field(default_factory=list)  # classifications seen after each batch
    crashes: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        during = self.classifications[-1] - self.classifications[0] if self.classifications else 0
        return (
            f"fuzz: sent {self.sent + self.other_topics} payloads ({self.sent} on the command topic, "
            f"{self.other_topics} on other topics), answered {self.answered_ok + self.refused} "
            f"({self.answered_ok} carried out, {self.refused} refused), crashes {self.crashes}, "
            f"classifications during the run {during}, failures {len(self.failures)}"
        )


def fuzz(sub: Subscriber, process: subprocess.Popen, payloads: int, seed: int = 0, batch: int = 50) -> FuzzReport:
    """Send ``payloads`` messages in batches; after each batch every answer and a new classification must arrive."""
    rng = random.Random(seed)
    report = FuzzReport()
    answers_before = len(sub.on("command/result"))
    report.classifications.append(len(sub.on("classification")))
    while report.sent + report.other_topics < payloads:
        size = min(batch, payloads - report.sent - report.other_topics)
        answered_before = len(sub.on("command/result"))
        on_command = 0
        for _ in range(size):
            topic, data, kind = payload(rng)
            sub.publish(topic, data)
            if topic == COMMAND_TOPIC:
                on_command += 1
            else:
                report.other_topics += 1
        report.sent += on_command
        results = sub.wait_for("command/result", count=answered_before + on_command, timeout=60)
        if len(results) < answered_before + on_command:
            report.failures.append(
                f"after {report.sent} payloads: {answered_before + on_command - len(results)} unanswered"
            )
        classified = len(sub.on("classification"))
        if len(sub.wait_for("classification", count=classified + 1, timeout=30)) <= classified:
            report.failures.append(f"after {report.sent} payloads: classification stopped")
        report.classifications.append(len(sub.on("classification")))
        if process.poll() is not None:
            report.crashes += 1
            report.failures.append(f"the daemon exited with code {process.returncode}")
            break
    answers = [m.json() for m in sub.on("command/result")[answers_before:]]
    report.answered_ok = sum(1 for a in answers if a.get("ok"))
    report.refused = sum(1 for a in answers if not a.get("ok"))
    extra = report.answered_ok + report.refused - report.sent
    if extra > 0:
        report.failures.append(f"{extra} answers more than commands sent (an answer to another topic?)")
    return report


def start_daemon(work: Path, bundle: Path, port: int, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """The daemon on a synthetic camera; ``bundle`` as the user typed it (relative to the current folder)."""
    config = write_config(work / "config.yaml", bundle.resolve(), "synthetic://?items=0&fps=20", port, device_id=DEVICE)
    return subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=stderr)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a daemon's log, to show why a run failed."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    return "\n".join(f"  | {line}" for line in text[-lines:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--payloads", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="smartbin-fuzz-") as tmp,
        LocalBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        sub = Subscriber(broker.port)
        log = Path(tmp) / "daemon.log"
        with log.open("w") as err:
            process = start_daemon(Path(tmp), Path(args.bundle), broker.port, stderr=err)
        try:
            if not sub.wait_for("classification", timeout=60):
                sys.stdout.write(f"fuzz: the daemon did not start classifying; its log:\n{tail(log)}\n")
                return 1
            report = fuzz(sub, process, args.payloads, args.seed)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)
            sub.close()
        failed = bool(report.failures or report.crashes)
        sys.stdout.write(report.summary() + "\n")
        for failure in report.failures:
            sys.stdout.write(f"  {failure}\n")
        if failed:
            sys.stdout.write(f"the daemon's log:\n{tail(log)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
