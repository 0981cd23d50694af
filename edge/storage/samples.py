"""The on-device sample store: frames worth a human's look, kept for the next training run.

Each sample is ``<id>.jpg`` + ``<id>.json`` (prediction, top-k, confidence, event_id, model, time,
why it was kept, and an operator's correction once there is one). A sample is complete when its
JSON exists: both files are written to temporary names and renamed, the JPEG first, so a power
cut or SIGKILL leaves either a whole sample or nothing a reader would take for one. Writes happen
in the store's own thread behind a bounded queue: the loop never waits on the disk, and a full
queue is counted, not waited on. Oldest samples go first past the byte cap or the retention time,
and nothing is written while the disk's free space is under its floor.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import SamplesConfig
from edge.formats.images import encode_jpeg
from edge.system.atomic import write_atomic
from edge.wire.payloads import Correction
from edge.wire.payloads import Sample as SampleMeta

log = logging.getLogger(__name__)

SUFFIXES = (".jpg", ".json")


@dataclass
class KeptFrame:
    """A frame to write and its JSON (its JSON: edge/wire/payloads.py's ``Sample``)."""

    image: np.ndarray
    meta: SampleMeta

    @property
    def sample_id(self) -> str:
        """``<ms since the epoch, 15 digits>-<event_id's first 12>``: oldest first by name."""
        return f"{int(self.meta.ts * 1000):015d}-{self.meta.event_id[:12]}"


def reasons_to_keep(meta: SampleMeta, default_bin: str, fraction: float, rng: random.Random) -> list[str]:
    """Why a decision's frame is worth a look (empty: it is not)."""
    reasons = []
    if meta.reason == "low_confidence":
        reasons.append("low_confidence")
    if meta.bin == default_bin:
        reasons.append("default_bin")
    if (meta.votes or 0) < (meta.frames or 0):
        reasons.append("frames_disagreed")
    if not reasons and rng.random() < fraction:
        reasons.append("random_confident")
    return reasons


class SampleStore:
    def __init__(self, config: SamplesConfig, default_bin: str, on_written: Callable[[str], None] | None = None):
        """``on_written``: told each sample's name once it is whole on disk (the writer's thread)."""
        self.config = config
        self.on_written = on_written
        self.default_bin = default_bin
        self.root = Path(config.path)
        self.queue: queue.Queue[KeptFrame | None] = queue.Queue(config.queue)
        self.dropped = 0  # the queue was full: the loop did not wait
        self.skipped_low_disk = 0
        self.written = 0
        self.errors = 0
        self.rng = random.Random()
        self._sizes: dict[str, int] = {}  # sample id -> bytes on disk, oldest first
        self._total = 0
        self._lock = threading.Lock()  # the byte count, read by the loop's metrics
        self._write_lock = threading.Lock()  # the writer thread and an operator's correction
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the loop's side
    def start(self) -> SampleStore:
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()
        self._thread = threading.Thread(target=self._run, name="samples", daemon=True)
        self._thread.start()
        return self

    def offer(self, meta: SampleMeta, image: np.ndarray, flagged: bool = False, also: tuple[str, ...] = ()) -> bool:
        """Queue a decision's frame when it is worth keeping (``flagged``: always); never blocks. True when
        queued."""
        fraction = self.config.confident_fraction
        reasons = ["flagged"] if flagged else reasons_to_keep(meta, self.default_bin, fraction, self.rng)
        reasons += [reason for reason in also if reason not in reasons]
        if not reasons:
            return False
        try:
            self.queue.put_nowait(KeptFrame(image, meta.model_copy(update={"kept_because": reasons})))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def keep_now(self, meta: SampleMeta, image: np.ndarray, label: str) -> str:
        """Write a corrected decision's sample at once (an operator's command, not the loop's hot path)."""
        correction = Correction(label=label, ts=round(time.time(), 3))
        sample = KeptFrame(image, meta.model_copy(update={"kept_because": ["corrected"], "correction": correction}))
        self._write(sample, force=True)
        return sample.sample_id

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout)

    def counts(self) -> dict:
        with self._lock:
            total, kept = self._total, len(self._sizes)
        return {
            "kept": kept,
            "bytes": total,
            "written": self.written,
            "dropped": self.dropped,
            "skipped_low_disk": self.skipped_low_disk,
            "errors": self.errors,
        }

    # ------------------------------------------------------------------ corrections
    def correct(self, event_id: str, label: str) -> str | None:
        """Record an operator's answer beside the sample of ``event_id``; its id, or None when none was kept."""
        for path in sorted(self.root.glob(f"*-{event_id[:12]}.json")):
            meta = SampleMeta.model_validate_json(path.read_bytes())
            if meta.event_id != event_id:
                continue
            meta.correction = Correction(label=label, ts=round(time.time(), 3))
            write_atomic(path, json.dumps(meta.dump(), ensure_ascii=False).encode("utf-8"))
            return path.stem
        return None

    def corrections(self) -> Counter:
        """Corrections per true label, over the samples on disk."""
        counts: Counter = Counter()
        for path in self.root.glob("*.json"):
            try:
                correction = SampleMeta.model_validate_json(path.read_bytes()).correction
            except (OSError, ValueError):  # pydantic's ValidationError too
                continue
            if correction is not None:
                counts[correction.label] += 1
        return counts

    # ------------------------------------------------------------------ the writer thread
    def _scan(self) -> None:
        """Take stock of what is on disk; finish off what an interrupted write left behind."""
        for leftover in self.root.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        for jpg in self.root.glob("*.jpg"):  # a JPEG without its JSON: the write stopped between the two
            if not jpg.with_suffix(".json").exists():
                jpg.unlink(missing_ok=True)
        with self._lock:
            self._sizes = {
                p.stem: sum(p.with_suffix(s).stat().st_size for s in SUFFIXES if p.with_suffix(s).exists())
                for p in sorted(self.root.glob("*.json"))
            }
            self._total = sum(self._sizes.values())

    def _run(self) -> None:
        while (sample := self.queue.get()) is not None:
            try:
                self._write(sample)
            except OSError as exc:  # a full or failing disk costs the sample, never the bin
                self.errors += 1
                log.error("sample %s not written: %s", sample.sample_id, exc)

    def _write(self, sample: KeptFrame, force: bool = False) -> None:
        """``force``: an operator's correction, written even under the free-space floor, and never
        overwritten by the loop's copy of the same sample still in the queue."""
        with self._write_lock:
            self._expire()
            path = self.root / f"{sample.sample_id}.json"
            if not force and (path.exists() or shutil.disk_usage(self.root).free < self.config.min_free_bytes):
                self.skipped_low_disk += not path.exists()
                return
            jpeg = encode_jpeg(sample.image, quality=self.config.jpeg_quality)
            meta = json.dumps(sample.meta.dump(), ensure_ascii=False).encode("utf-8")
            write_atomic(self.root / f"{sample.sample_id}.jpg", jpeg)
            write_atomic(path, meta)  # last: the sample now exists
            with self._lock:
                self._total += len(jpeg) + len(meta) - self._sizes.get(sample.sample_id, 0)
                self._sizes[sample.sample_id] = len(jpeg) + len(meta)
            self.written += 1
            self._expire()
        if self.on_written is not None:
            self.on_written(sample.sample_id)

    def _expire(self) -> None:
        """Oldest out: past the retention time, then while over the byte cap."""
        cutoff_ms = int((time.time() - self.config.retention_days * 86400) * 1000)
        while True:
            with self._lock:
                if not self._sizes:
                    return
                oldest = next(iter(self._sizes))
                if self._total <= self.config.max_bytes and int(oldest.split("-", 1)[0]) >= cutoff_ms:
                    return
                self._total -= self._sizes.pop(oldest)
            for suffix in (".json", ".jpg"):  # the JSON first: a half-removed sample is no sample
                (self.root / f"{oldest}{suffix}").unlink(missing_ok=True)
