"""What `smartbin review` looks at and writes: a folder of samples pulled from the bins (``<id>.jpg`` beside
``<id>.json``, as a bin keeps them: `smartbin samples fetch`, or scp of /var/lib/smartbin/samples).

Each answer goes into its sample's JSON at once, written whole or not at all, so nothing is lost when the
browser or the server stops; `smartbin samples pull FOLDER` then makes the dataset that `smartbin train`
reads. The class -> bin mapping is the folder's ``bins.yaml``, which pull reads too.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError

from convert.data.pull import NOVELTY_FILE
from edge.errors import DatasetError
from edge.formats.classbins import BINS_FILE, read_bins_file, write_bins
from edge.formats.classbins import normalise as normalised
from edge.system.atomic import write_atomic
from edge.wire.payloads import Correction, Sample, Verdict
from edge.wire.sample_message import SAMPLE_NAME

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One sample as the page shows it."""

    id: str
    label: str | None
    bin: str | None
    confidence: float | None
    top_k: list[dict]
    guesses: list[str]  # what the keys 1, 2, 3 answer: the decision's label (when sure enough), then the top-k
    device: str
    ts: float
    day: str
    kept_because: list[str]
    novelty: float | None  # distance to the nearest training image (smartbin review --rank-with), None unknown
    worth: float
    answer: dict | None  # verdict, label, by


def worth(meta: Sample, novel: float = 0.0) -> float:
    """How much a person's look at this sample is worth, higher first: a correction made on the bin, a frame
    flagged there, low confidence, frames that disagreed, a close second guess, and how new it looks beside
    the others (``novel``: 0 for the most familiar, 1 for the most novel of the folder)."""
    score = 1.0 - (meta.confidence if meta.confidence is not None else 0.0) + novel
    if meta.correction is not None and meta.correction.by == "bin":
        score += 3.0  # a person at the bin said the model was wrong
    if "flagged" in meta.kept_because:
        score += 1.0
    if (meta.votes or 0) < (meta.frames or 0):
        score += 0.5
    if len(meta.top_k) > 1:
        score += max(0.0, 0.5 - (meta.top_k[0].confidence - meta.top_k[1].confidence))
    return round(score, 4)


def ranks(novelty: dict[str, float]) -> dict[str, float]:
    """Each sample's place among the folder's by novelty, the share of the others that look more familiar: 0
    for the most familiar, 1 for the most novel; equal distances share a place."""
    values = sorted(novelty.values())
    return {stem: bisect.bisect_left(values, d) / max(len(values) - 1, 1) for stem, d in novelty.items()}


def guesses(meta: Sample) -> list[str]:
    """The model's answers, best first, each once: the decision's label unless no class was sure enough (then
    it says unknown, label_index -1), then the last frame's top-k."""
    decided = [meta.label] if meta.label and (meta.label_index or 0) >= 0 else []
    return list(dict.fromkeys([*decided, *(t.label for t in meta.top_k)]))


def item_of(sample_id: str, meta: Sample, novelty: float | None = None, novel: float = 0.0) -> Item:
    answer = meta.correction
    return Item(
        id=sample_id,
        label=meta.label,
        bin=meta.bin,
        confidence=meta.confidence,
        top_k=[t.model_dump() for t in meta.top_k],
        guesses=guesses(meta),
        device=meta.device_id or "?",
        ts=meta.ts,
        day=dt.datetime.fromtimestamp(meta.ts).date().isoformat(),
        kept_because=meta.kept_because,
        novelty=novelty,
        worth=worth(meta, novel),
        answer=answer.model_dump(include={"verdict", "label", "by"}) if answer is not None else None,
    )


class ReviewStore:
    """The samples of one folder, their answers and the folder's class -> bin mapping."""

    def __init__(self, folder: Path):
        self.folder = folder
        if not folder.is_dir():
            raise DatasetError(f"{folder}: no such folder (fetch a bin's samples with `smartbin samples fetch`)")
        self._lock = threading.Lock()  # one answer written at a time: two tabs never interleave a file

    def _meta(self, sample_id: str) -> Sample:
        if not SAMPLE_NAME.fullmatch(sample_id) or not (self.folder / f"{sample_id}.jpg").is_file():
            raise DatasetError(f"no sample {sample_id!r} in {self.folder}")
        return Sample.model_validate_json((self.folder / f"{sample_id}.json").read_bytes())

    def items(self) -> list[Item]:
        """Every whole sample (its JPEG and its JSON), most worth a look first."""
        found, novelty = [], self.novelty()
        rank = ranks(novelty)
        for path in sorted(self.folder.glob("*.json")):
            if not SAMPLE_NAME.fullmatch(path.stem) or not path.with_suffix(".jpg").is_file():
                continue
            try:
                meta = Sample.model_validate_json(path.read_bytes())
                found.append(item_of(path.stem, meta, novelty.get(path.stem), rank.get(path.stem, 0.0)))
            except (OSError, ValidationError) as exc:
                log.warning("skipped %s: %s", path, exc)
        return sorted(found, key=lambda item: (-item.worth, -item.ts))

    def novelty(self) -> dict[str, float]:
        """Each sample's distance to the training images, from the folder's novelty.json (empty without one)."""
        path = self.folder / NOVELTY_FILE
        try:
            rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
            return {Path(row["image"]).stem: float(row["distance"]) for row in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not read (%s); sorting without novelty", path, exc)
            return {}

    def image(self, sample_id: str) -> Path:
        self._meta(sample_id)
        return self.folder / f"{sample_id}.jpg"

    def answer(self, ids: list[str], verdict: Verdict, label: str | None) -> list[Item]:
        """Record one answer for each sample, each file written whole before the next; the items as now."""
        if verdict == "item" and not (label or "").strip():
            raise DatasetError("an answer that it was an item needs the item's label")
        correction = Correction(
            label=label.strip() if verdict == "item" and label else None,
            ts=round(time.time(), 3),
            verdict=verdict,
            by="review",
        )
        done, novelty = [], self.novelty()
        rank = ranks(novelty)
        with self._lock:
            metas = [(sample_id, self._meta(sample_id)) for sample_id in ids]  # all found, or nothing written
            for sample_id, meta in metas:
                meta.correction = correction
                text = json.dumps(meta.dump(), ensure_ascii=False).encode("utf-8")
                write_atomic(self.folder / f"{sample_id}.json", text)
                done.append(item_of(sample_id, meta, novelty.get(sample_id), rank.get(sample_id, 0.0)))
        log.info("%d sample(s) answered %s%s", len(done), verdict, f" {correction.label}" if correction.label else "")
        return done

    def classes(self, items: list[Item]) -> dict[str, str]:
        """Each class the samples name (predicted, top-k, answered) -> its bin: the folder's bins.yaml first,
        then as the bins knew it, else other."""
        edited = read_bins_file(self.folder / BINS_FILE)
        known: dict[str, str] = {}
        for item in items:
            for entry in [{"label": item.label, "bin": item.bin}, *item.top_k]:
                if entry["label"] and entry["bin"]:
                    known.setdefault(entry["label"], entry["bin"])
            if item.answer and item.answer["label"]:
                known.setdefault(item.answer["label"], "other")
        return {name: edited.get(normalised(name), known[name]) for name in sorted(known)}

    def set_bin(self, label: str, bin_name: str) -> None:
        """The class's bin from now on, in the folder's bins.yaml (DatasetError for an unknown bin); under the
        store's lock, as the answers are: two tabs changing two classes at once keep both."""
        with self._lock:
            write_bins(self.folder, {label: bin_name})


def as_json(items: list[Item]) -> list[dict]:
    return [asdict(item) for item in items]
