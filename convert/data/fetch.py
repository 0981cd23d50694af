"""`smartbin samples fetch`: a bin's kept samples copied from its status page into a review folder.

A bin stands in a public place, and even over HTTPS (checked against the bin's CA with ``--ca``) what it answers
is not trusted. Only names of the
sample format (``<15 digits>-<12 hex>``, edge/storage/samples.py) are fetched, each file only inside the
folder, each reply bounded in size, each JSON a sample before anything is written; a refused sample is said
and skipped, and nothing already in the folder (answers given there) is replaced.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from edge.errors import DatasetError
from edge.system.atomic import write_atomic
from edge.web.reader import PageAccess, open_page
from edge.wire.payloads import Sample
from edge.wire.sample_message import MAX_JPEG_BYTES, SAMPLE_NAME

log = logging.getLogger(__name__)

# A reply larger than these is refused: a listing of 10,000 samples is ~0.3 MB, a frame ~0.1 MB, its JSON ~1 kB.
MAX_BYTES = {"/api/samples": 8 * 2**20, ".jpg": MAX_JPEG_BYTES, ".json": 256 * 2**10}
TIMEOUT_S = 30


class Refused(Exception):
    """One sample the bin answered wrongly: skipped, with the reason."""


def fetch(url: str, folder: Path, access: PageAccess = PageAccess()) -> Path:
    """Download the samples the status page lists into ``folder``, but for those already there (with the
    answers given to them since): several bins may be fetched into one folder, again and again."""

    def get(path: str, limit: int) -> bytes:
        with open_page(f"{url.rstrip('/')}{path}", access, TIMEOUT_S) as response:
            body = response.read(limit + 1)
        if len(body) > limit:
            raise Refused(f"{url}{path}: more than {limit // 1024} kB")
        return body

    names = _listing(url, get)
    folder.mkdir(parents=True, exist_ok=True)
    new = [name for name in names if not (folder / f"{name}.json").exists()]  # kept: answers given here
    refused = []
    for name in new:
        try:
            image, meta = (
                get(f"/samples/{name}.jpg", MAX_BYTES[".jpg"]),
                get(f"/samples/{name}.json", MAX_BYTES[".json"]),
            )
            _check(name, image, meta)
        except Refused as exc:
            refused.append(str(exc))
            continue
        write_atomic(folder / f"{name}.jpg", image)
        write_atomic(folder / f"{name}.json", meta)  # the JSON last, as on the device: whole once it exists
    log.info("fetched %d new sample(s) from %s (%d there already)", len(new) - len(refused), url, len(names) - len(new))
    if refused:
        log.warning("%d sample(s) refused: %s", len(refused), "; ".join(refused[:5]))
    return folder


def _listing(url: str, get) -> list[str]:
    """The names the page lists; refused as a whole when it is not a listing, name by name when not a sample's."""
    try:
        listing = json.loads(get("/api/samples", MAX_BYTES["/api/samples"]))
    except (Refused, ValueError) as exc:
        raise DatasetError(f"{url}/api/samples: not a sample listing ({exc})") from None
    names = listing.get("samples") if isinstance(listing, dict) else None
    if not isinstance(names, list):
        raise DatasetError(f"{url}/api/samples: not a sample listing (no list of samples)")
    wrong = [name for name in names if not (isinstance(name, str) and SAMPLE_NAME.fullmatch(name))]
    if wrong:
        log.warning("%s: %d name(s) that are not a sample's refused, e.g. %r", url, len(wrong), wrong[0])
    return sorted({name for name in names if name not in wrong})


def _check(name: str, image: bytes, meta: bytes) -> None:
    """A JPEG and a sample's JSON, or Refused saying which is not."""
    if not image.startswith(b"\xff\xd8"):
        raise Refused(f"{name}.jpg: not a JPEG")
    try:
        Sample.model_validate_json(meta)
    except (ValidationError, ValueError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc
        raise Refused(f"{name}.json: not a sample ({reason})") from None
