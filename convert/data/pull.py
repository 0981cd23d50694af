"""`smartbin samples pull`: a device's kept samples become a dataset `smartbin train` reads.

The source is the device's status page (``http://bin:8080``, with its password: it serves the
samples at /api/samples) or a copy of the device's sample folder (``scp -r bin:/var/lib/smartbin/samples .``).
Samples an operator corrected are labelled with the correction and make the dataset; the others
keep the model's own guess and go to ``unreviewed/`` beside it (a dataset of its own: review it,
or add it with a second ``--data`` knowingly). Both are in the seed's format (img_N.jpg +
img_N.txt + garbage_classify_rule.json), and ``field_samples.json`` records where each image came
from, which `smartbin dataset check` reports.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.errors import DatasetError
from edge.formats.classbins import BINS_FILE, normalise, read_bins_file
from edge.formats.dataset import RULES_FILE
from edge.wire.payloads import Sample

log = logging.getLogger(__name__)

FIELD_FILE = "field_samples.json"
UNREVIEWED = "unreviewed"
NOVELTY_FILE = "novelty.json"  # [{image, label, distance}], most novel first (convert/training/novelty.py)


@dataclass
class FieldImage:
    """One line of ``field_samples.json``: an image of the dataset and the sample it came from."""

    image: str
    label: str
    reviewed: bool
    predicted: str | None
    confidence: float | None
    kept_because: list[str]
    event_id: str
    model: dict[str, Any] = field(default_factory=dict)
    ts: float | None = None
    source: str = ""


def read_samples(source: Path) -> list[tuple[Path, Sample]]:
    """(JPEG, metadata) of every whole sample in a device's sample folder, oldest first."""
    if not source.is_dir():
        raise DatasetError(f"{source}: sample folder not found")
    found = []
    for meta_path in sorted(source.glob("*.json")):
        image = meta_path.with_suffix(".jpg")
        try:
            meta = Sample.model_validate_json(meta_path.read_bytes())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError too
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc
            log.warning("skipped %s: %s", meta_path, reason)
            continue
        if image.is_file() and (meta.label or meta.correction):  # a frame flagged before any decision has no label
            found.append((image, meta))
    if not found:
        raise DatasetError(f"{source}: no samples (<id>.jpg + <id>.json) in it")
    return found


def _write(folder: Path, items: list[tuple[Path, Sample, str]], bins: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted({label for _, _, label in items})
    index = {name: i for i, name in enumerate(names)}
    rules = {str(i): f"{bins.get(name, 'other')}/{name}" for name, i in index.items()}
    (folder / RULES_FILE).write_text(json.dumps(rules, ensure_ascii=False, indent=1), encoding="utf-8")
    record = []
    for n, (image, meta, label) in enumerate(items, 1):
        name = f"img_{n}.jpg"
        shutil.copyfile(image, folder / name)
        (folder / f"img_{n}.txt").write_text(f"{name}, {index[label]}\n", encoding="utf-8")
        reviewed = meta.correction is not None
        record.append(
            FieldImage(
                name,
                label,
                reviewed,
                meta.label,
                meta.confidence,
                meta.kept_because,
                meta.event_id,
                meta.model,
                meta.ts,
                image.stem,
            )
        )
    text = json.dumps([asdict(r) for r in record], ensure_ascii=False, indent=1)
    (folder / FIELD_FILE).write_text(text, encoding="utf-8")


def pull(source: str | Path, out: str | Path) -> dict:
    """Write the dataset (corrected samples) of the samples folder ``source`` and ``unreviewed/``; return the
    counts."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty; pick a new folder")
    samples = read_samples(Path(source))
    bins = known_bins(Path(source), [meta for _, meta in samples])
    answered = [(image, meta, meta.correction) for image, meta in samples if meta.correction is not None]
    reviewed = [(image, meta, c.label) for image, meta, c in answered if c.verdict == "item" and c.label]
    not_items = sum(1 for _, _, c in answered if c.verdict == "not_item")
    unreviewed = [
        (image, meta, meta.label)
        for image, meta in samples
        if meta.label and (meta.correction is None or meta.correction.verdict == "unsure")
    ]
    if reviewed:
        _write(out, reviewed, bins)
    if unreviewed:
        _write(out / UNREVIEWED, unreviewed, bins)
    predicted = {entry.label for _, meta in samples for entry in [meta, *meta.top_k] if entry.label}
    new = sorted({label for _, _, label in reviewed} - predicted)
    return {"reviewed": len(reviewed), "unreviewed": len(unreviewed), "not_items": not_items, "new_labels": new}


def known_bins(folder: Path, metas: list[Sample]) -> dict[str, str]:
    """Each label's bin: the folder's bins.yaml (written by `smartbin review`) first, then as the device knew
    it (predictions and their top-k). A label none of them names goes to "other" when written."""
    edited = read_bins_file(folder / BINS_FILE)
    bins: dict[str, str] = {}
    for meta in metas:
        for entry in [meta, *meta.top_k]:
            if entry.label and entry.bin:
                bins.setdefault(entry.label, entry.bin)
        if meta.correction is not None and meta.correction.label:
            bins.setdefault(meta.correction.label, edited.get(normalise(meta.correction.label), "other"))
    return {label: edited.get(normalise(label), bin_name) for label, bin_name in bins.items()}


def field_summary(root: Path) -> str | None:
    """What of a dataset came from the field (None when nothing did)."""
    path = root / FIELD_FILE
    if not path.is_file():
        return None
    record = [FieldImage(**r) for r in json.loads(path.read_text(encoding="utf-8"))]
    corrected = sum(1 for r in record if r.reviewed and r.label != r.predicted)
    models = sorted({str(r.model.get("name") or "?") for r in record})
    text = (
        f"{len(record)} image(s) pulled from the field ({', '.join(models)}): "
        f"{sum(r.reviewed for r in record)} reviewed, {corrected} of them corrected to another label"
    )
    if (root / UNREVIEWED).is_dir():
        text += f"; unreviewed ones are in {root / UNREVIEWED}"
    return text
