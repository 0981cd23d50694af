"""`model.variant: auto`: the bin times every variant, backend and thread count the bundle and this device offer,
on the bundle's acceptance images, rules out any that does not give every reference image the float model's
top-1 (the rule an update's acceptance test applies), and serves the fastest of the rest.

Each variant is tried in a process of its own (``python -m edge.models.pick --trial``): a backend that crashes
(a segfault in a driver) or raises is ruled out, and the daemon goes on. A choice is kept in the model store
with what it was measured on (the bundle's files, this CPU, the runtimes' versions) and used again at the next
start until one of them changes. The TFLite variants run on the TFLite backend ``auto`` prefers here (a device
has one), the ONNX ones on ONNX Runtime; threads: 1, and every core up to 4.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.classifier import reference_agreement
from edge.errors import SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.variants import is_onnx
from edge.runtime import BACKENDS, available_backends, default_threads, open_engine, runs
from edge.system.atomic import write_atomic
from edge.system.cpu import cpu_flags, cpu_model, read_cpuinfo
from edge.system.versions import installed_versions

log = logging.getLogger(__name__)

PICK_FILE = "pick.json"  # in the model store
KEPT = 5  # picks kept, one per bundle
RUNS = 30  # timed invokes per thread count, after WARMUP
WARMUP = 3
TRIAL_TIMEOUT_S = 300.0  # one variant's trial (a TensorRT engine build included)


@dataclass(frozen=True)
class Choice:
    variant: str
    backend: str
    threads: int


@dataclass
class Trial:
    """One variant, backend and thread count as measured here; ``reason`` says why it was ruled out."""

    variant: str
    backend: str
    threads: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.reason is None and self.p50_ms is not None

    @property
    def choice(self) -> Choice:
        return Choice(self.variant, self.backend, self.threads)


@dataclass
class Pick:
    chosen: Choice | None
    trials: list[Trial]
    key: dict
    measured: float = field(default_factory=time.time)

    @property
    def best(self) -> Trial | None:
        """The chosen one's trial (None when none passed)."""
        return next((t for t in self.trials if t.passed and t.choice == self.chosen), None)

    def payload(self) -> dict:
        """What …/model says of the pick."""
        return {
            "chosen": asdict(self.chosen) if self.chosen else None,
            "measured": round(self.measured, 3),
            "trials": [{**asdict(t), "passed": t.passed} for t in self.trials],
        }


def tried_on(bundle: Bundle, backend: str = "auto") -> dict[str, list[tuple[str, list[int]]]]:
    """variant -> [(backend, thread counts)] this device offers for the bundle (only ``backend``'s, pinned)."""
    have = [b for b in available_backends() if backend in ("auto", b)]
    tflite = next((b for b in BACKENDS if b in have and runs(b, "int8")), None)
    threads = sorted({1, default_threads()})
    offered: dict[str, list[tuple[str, list[int]]]] = {}
    for variant in bundle.variant_names():
        runner = "onnxruntime" if is_onnx(variant) else tflite
        if runner is not None and runner in have:
            offered[variant] = [(runner, threads)]
    return offered


def machine_key(bundle: Bundle) -> dict:
    """What a pick was measured on: the bundle's variant files, this CPU, the runtimes' versions."""
    files = sorted((v, e.sha256) for v, e in bundle.manifest.variants.items())
    cpuinfo = read_cpuinfo()
    cpu, model = sorted(cpu_flags(cpuinfo)), cpu_model(cpuinfo)
    return {
        "bundle": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16],
        "cpu": f"{model} {os.cpu_count()} cores {hashlib.sha256(' '.join(cpu).encode()).hexdigest()[:12]}",
        "runtimes": installed_versions(("ai-edge-litert", "tflite-runtime", "tensorflow", "onnxruntime")),
    }


def pick(bundle: Bundle, backend: str = "auto", runs_per: int = RUNS) -> Pick:
    """Measure what this device offers for ``bundle`` (on ``backend`` alone when pinned) and choose the fastest
    that passes."""
    trials: list[Trial] = []
    for variant, offered in tried_on(bundle, backend).items():
        for backend, threads in offered:
            trials += trial(bundle.path, variant, backend, threads, runs_per)
    passed = [t for t in trials if t.passed]
    best = min(passed, key=lambda t: t.p50_ms, default=None)
    chosen = best.choice if best else None
    return Pick(chosen, trials, machine_key(bundle))


def trial(path: Path, variant: str, backend: str, threads: list[int], runs_per: int) -> list[Trial]:
    """One variant on one backend at each thread count, in a process of its own."""
    command = [sys.executable, "-m", "edge.models.pick", "--trial", str(path), variant, backend]
    command += [",".join(map(str, threads)), str(runs_per)]
    ruled_out = lambda why: [Trial(variant, backend, n, reason=why) for n in threads]  # noqa: E731
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return ruled_out(f"no answer within {TRIAL_TIMEOUT_S:.0f} s")
    if done.returncode < 0:
        return ruled_out(f"crashed ({signal.Signals(-done.returncode).name})")
    try:
        return [Trial(**row) for row in json.loads(done.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError, TypeError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ruled_out(f"failed (exit {done.returncode}): {last[:200]}")


def measure(path: Path, variant: str, backend: str, threads: list[int], runs_per: int) -> list[Trial]:
    """In the trial's process: load, check the acceptance set, time the invokes."""
    bundle = Bundle.open(path)
    try:
        data = bundle.acceptance()  # read and verified once for every thread count
    except SmartbinError as exc:
        return [Trial(variant, backend, n, reason=f"{type(exc).__name__}: {exc}"[:200]) for n in threads]
    rows = []
    for n in threads:
        try:
            if data is None:
                raise SmartbinError("no acceptance set in the bundle")
            engine = open_engine(bundle, backend, variant, n)
            agree = reference_agreement(engine, data)
            if agree < len(data[0]):
                rows.append(Trial(variant, backend, n, reason=f"{agree} of {len(data[0])} reference images agree"))
                continue
            one = data[0][:1]
            for _ in range(WARMUP):
                engine.infer(one)
            times = []
            for _ in range(runs_per):
                started = time.perf_counter()
                engine.infer(one)
                times.append((time.perf_counter() - started) * 1e3)
            p95 = sorted(times)[max(0, int(0.95 * len(times)) - 1)]
            rows.append(Trial(variant, backend, n, round(statistics.median(times), 3), round(p95, 3)))
        except Exception as exc:  # a backend that raises is ruled out, with why
            rows.append(Trial(variant, backend, n, reason=f"{type(exc).__name__}: {exc}"[:200]))
    return rows


class PickStore:
    """The picks made here, in the model store, the newest first (KEPT of them: the bundles a rollback or a
    reload may come back to): one is used again while its key matches (same bundle files, CPU, runtimes)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / PICK_FILE

    def _all(self) -> list[dict]:
        try:
            kept = json.loads(self.path.read_text())
            return [p for p in kept if isinstance(p, dict)] if isinstance(kept, list) else []
        except (OSError, ValueError):
            return []

    def load(self, key: dict) -> Pick | None:
        for data in self._all():
            if data.get("key") != key:
                continue
            try:
                chosen = Choice(**data["chosen"]) if data["chosen"] else None
                trials = [Trial(**{k: v for k, v in t.items() if k != "passed"}) for t in data["trials"]]
                return Pick(chosen, trials, key, data["measured"])
            except (KeyError, TypeError):
                return None
        return None

    def save(self, result: Pick) -> None:
        kept = [p for p in self._all() if p.get("key") != result.key][: KEPT - 1]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps([{**result.payload(), "key": result.key}, *kept]).encode())
        except OSError as exc:
            log.warning("%s: cannot keep the pick (%s); it is measured again at the next start", self.path, exc)


def main() -> int:
    parser = argparse.ArgumentParser(description="one trial of the pick (edge/models/pick.py runs it)")
    parser.add_argument("--trial", nargs=5, metavar=("BUNDLE", "VARIANT", "BACKEND", "THREADS", "RUNS"))
    args = parser.parse_args()
    path, variant, backend, threads, runs_per = args.trial
    rows = measure(Path(path), variant, backend, [int(n) for n in threads.split(",")], int(runs_per))
    sys.stdout.write(json.dumps([asdict(r) for r in rows]) + "\n")  # the one line the parent reads
    return 0


if __name__ == "__main__":
    sys.exit(main())
