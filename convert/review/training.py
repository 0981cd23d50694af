"""Training from the review station: the reviewed samples into a dataset, a training run on it beside the
original data, its bundle, and both that bundle and the one the bins run now measured on the same hold-out.

Each job runs in the background, one at a time, as the commands a user would type (`smartbin samples pull`,
`smartbin train`, `smartbin convert`: each in its own process, its output in the job's log), then the
comparison in this process through the device engines. Its state is a JSON file in the job's folder, written
at every step, so the page (and a restarted server) shows where it is; a job whose server died is marked
so. The training run's own report (curves, confusion matrices, worst images) is served from its folder.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import SmartbinError
from edge.system.atomic import write_atomic

log = logging.getLogger(__name__)
STEPS = ("pull", "train", "convert", "compare")
REPORT_FILES = ("report.html", "training_curves.png", "confusion_matrix.png", "bin_confusion_matrix.png")
REPORT_FILES += ("worst_images.png", "report.json")


@dataclass
class TrainingSetup:
    """What a training from the page needs: given to `smartbin review` once, the same for every job."""

    samples: Path  # the review folder
    data: list[Path]  # the dataset(s) the running model was trained on
    holdout: Path  # images neither model trained on (`smartbin dataset split`'s holdout)
    serving: Path  # the bundle the bins run now
    work: Path  # where the jobs' folders go
    train_args: list[str] = field(default_factory=list)  # more of `smartbin train`'s options
    convert_args: list[str] = field(default_factory=list)  # more of `smartbin convert`'s options


@dataclass
class JobState:
    id: str
    state: str = "running"  # running, done, failed, interrupted
    kind: str = "full"  # full: pull, train, convert; head: a new head on the bins' backbone (smartbin head train)
    step: str = STEPS[0]
    epochs_done: int = 0
    started: float = field(default_factory=time.time)
    ended: float | None = None
    error: str | None = None
    comparison: dict | None = None
    bundle: str | None = None


class Trainer:
    """Starts and tracks training jobs under ``setup.work``; thread-safe."""

    def __init__(self, setup: TrainingSetup):
        for path in (*setup.data, setup.holdout, setup.serving):
            if not path.exists():
                raise SmartbinError(f"{path}: not found (review's training options name it)")
        self.setup = setup
        self.epochs = checked_options(setup)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None  # the running step's
        self.stopping = threading.Event()
        setup.work.mkdir(parents=True, exist_ok=True)
        for job in self.jobs():  # a job left running by a server that stopped
            if job.state == "running":
                job.state, job.error = "interrupted", "the review server stopped during this job"
                self.save(job)

    def folder(self, job_id: str) -> Path:
        return self.setup.work / job_id

    def jobs(self) -> list[JobState]:
        """Every job, newest first."""
        found = []
        for state in sorted(self.setup.work.glob("job-*/state.json"), reverse=True):
            try:
                found.append(JobState(**json.loads(state.read_text(encoding="utf-8"))))
            except (ValueError, TypeError) as exc:
                log.warning("%s: not read (%s)", state, exc)
        return found

    def report_file(self, job_id: str, name: str) -> Path:
        """One of a job's training report files (only those: nothing else of the folder is served)."""
        path = self.folder(job_id) / "run" / name
        if name not in REPORT_FILES or not job_id.startswith("job-") or "/" in job_id or not path.is_file():
            raise SmartbinError(f"no report file {name} for {job_id}")
        return path

    def teaches(self) -> bool:
        """Whether the bins' bundle is in two parts: a head alone can be taught on it."""
        from edge.formats.bundle import Bundle

        return Bundle.open(self.setup.serving).manifest.head is not None

    def taught_labels(self, job: JobState) -> list[str]:
        """The classes a head job added to the bins' ones: their items are meant to go elsewhere now (the rollout's
        shadow counts them as expected changes, not as flips)."""
        from edge.formats.bundle import Bundle

        known = {e.name for e in Bundle.open(self.setup.serving).manifest.labels}
        return [e.name for e in Bundle.open(job.bundle).manifest.labels if e.name not in known] if job.bundle else []

    def start(self, kind: str = "full") -> JobState:
        """A new job in the background (``kind`` head: a new head only); SmartbinError while one runs, ValueError
        for a kind this station cannot run."""
        if kind not in ("full", "head"):
            raise ValueError(f"kind {kind!r}: full or head")
        if kind == "head" and not self.teaches():
            raise ValueError("the bins' bundle is not in two parts (smartbin convert --split-head): train instead")
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                raise SmartbinError("a training is running already: wait for it to end")
            job = JobState(
                id=time.strftime("job-%Y%m%d-%H%M%S"), kind=kind, step="teach" if kind == "head" else STEPS[0]
            )
            self.folder(job.id).mkdir()
            self.save(job)
            self.thread = threading.Thread(target=self.run, args=(job,), name=job.id, daemon=True)
            self.thread.start()
        return job

    def stop(self, timeout: float = 30) -> None:
        """The station stops: the running step's process is ended (SIGTERM, then SIGKILL) and its job says it
        was interrupted, so that no training outlives the server that started it."""
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.thread is not None:
            self.thread.join(timeout)

    def save(self, job: JobState) -> None:
        write_atomic(self.folder(job.id) / "state.json", json.dumps(asdict(job), indent=2).encode())

    # ------------------------------------------------------------------ the job's thread
    def run(self, job: JobState) -> None:
        folder, setup = self.folder(job.id), self.setup
        field_data, run, bundle = folder / "field", folder / "run", folder / "bundle"
        data = [a for d in setup.data for a in ("--data", str(d))]
        commands = {
            "teach": ["head", "train", str(setup.samples), "--bundle", str(setup.serving), *data, "--out", str(bundle)]
            + ["--cache", str(setup.work / "features")],
            "pull": ["samples", "pull", str(setup.samples), "--out", str(field_data)],
            "train": ["train", *data, "--data", str(field_data)] + ["--out", str(run), *setup.train_args],
            "convert": ["convert", str(run), "--out", str(bundle), "--variants", "int8", *setup.convert_args],
        }
        try:
            with (folder / "log.txt").open("a", encoding="utf-8") as out:
                for step in ("teach",) if job.kind == "head" else STEPS[:-1]:
                    job.step = step
                    self.save(job)
                    self.command(job, commands[step], out, run / "history.csv")
            job.step, job.bundle = "compare", str(bundle)
            self.save(job)
            job.comparison = compare(bundle, setup.serving, setup.holdout)
            job.state = "done"
        except Exception as exc:  # noqa: BLE001 - whatever ended the job is its answer on the page
            job.state, job.error = "failed", str(exc) or type(exc).__name__
            if self.stopping.is_set():
                job.state, job.error = "interrupted", "the review server stopped during this job"
            log.warning("%s failed at %s: %s", job.id, job.step, job.error)
        job.ended = time.time()
        self.save(job)

    def command(self, job: JobState, args: list[str], out, history: Path) -> None:
        """One `smartbin` command in its own process; its epochs counted from the run's history as it goes."""
        out.write(f"$ smartbin {' '.join(args)}\n")
        out.flush()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "edge.cli", *args]
        if self.stopping.is_set():
            raise SmartbinError("the review server is stopping")
        process = self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(0.5)
            if history.is_file():
                epochs = max(0, len(history.read_text(encoding="utf-8").splitlines()) - 1)
                if epochs != job.epochs_done:
                    job.epochs_done = epochs
                    self.save(job)
        if process.returncode != 0:
            raise SmartbinError(f"smartbin {args[0]} failed (exit {process.returncode}): see {out.name}")


def checked_options(setup: TrainingSetup) -> int:
    """Read the extra options as `smartbin train` and `smartbin convert` would, before any job runs; the
    number of epochs a training runs with them."""
    import contextlib
    import io

    from edge.cli import build_parser, registered_extensions

    parser = build_parser(registered_extensions())
    parsed = {}
    for command, extra in (("train", setup.train_args), ("convert", setup.convert_args)):
        args = [command, "--out", "x", "--data", "x"] if command == "train" else [command, "x", "--out", "x"]
        try:
            with contextlib.redirect_stderr(io.StringIO()) as said:
                parsed[command] = parser.parse_args([*args, *extra])
        except SystemExit:
            error = said.getvalue().strip().splitlines()[-1:] or ["not understood"]
            raise SmartbinError(f"{' '.join(extra)}: not options of smartbin {command} ({error[0]})") from None
    return parsed["train"].epochs + parsed["train"].fine_tune_epochs


def compare(new: Path, serving: Path, holdout: Path) -> dict:
    """Both bundles on the hold-out through the device's engine (int8 where they have it), and the gate's
    refusal when the new one sorts fewer items right: the rollout is refused then (edge/fleet/gate.py)."""
    from edge.fleet.gate import hold_out

    gate = hold_out(new, serving, holdout, "int8")
    return {"new": asdict(gate.new), "serving": asdict(gate.serving), "refusal": gate.refusal}
