"""`update_model`: fetch a bundle archive over HTTP(S), check it, test it on this device's engine.

All of it runs in a thread beside the loop, which keeps classifying with the old model; the loop
only swaps in the prepared classifier (``Daemon.apply_update``). Each stage is reported as it
starts, and anything that fails leaves the old model serving with a message saying which check
failed.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import queue
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.classifier import Classifier, reference_agreement
from edge.config import Config, UpdatesConfig
from edge.errors import SmartbinError
from edge.formats.bundle import Bundle, sha256_file
from edge.models.store import ModelStore, UpdateError

log = logging.getLogger(__name__)

ROOM_CHECK_BYTES = 1 << 18  # without a Content-Length, the disk's room is checked every 256 kB
CHUNK = 1 << 16
BACKOFF_S = 2.0  # before the second attempt; doubled for each one after
BACKOFF_MAX_S = 60.0


@dataclass
class UpdateRequest:
    command_id: Any
    url: str
    sha256: str | None  # None: trusted by its signature alone (updates.public_key)
    force: bool = False
    shadow: bool = False  # run it beside the serving model instead of switching to it


@dataclass
class Prepared:
    """A model ready to switch to: downloaded, verified, unpacked, loaded and tested."""

    request: UpdateRequest
    folder: Path
    classifier: Classifier
    acceptance: str


def _check_room(url: str, dest: Path, total: int, have: int, max_bytes: int) -> None:
    """Refuse an archive of ``total`` bytes (``have`` of them here) that breaks the cap or the disk's room."""
    if total > max_bytes:
        raise UpdateError(f"{url}: {total} bytes, more than updates.max_bytes ({max_bytes})")
    free = shutil.disk_usage(dest.parent).free
    if 2 * total - have > free:  # the archive, then as much unpacked
        raise UpdateError(f"{url}: {total} bytes to download and as many to unpack, only {free} free in {dest.parent}")


def _write_body(url: str, resp, dest: Path, have: int, sized: bool, max_bytes: int) -> int:
    """Append the response's body to ``dest`` (which holds ``have`` bytes of it); the bytes held then. Without
    a size (``sized`` false) the disk's room is checked as the bytes come."""
    with dest.open("ab" if have else "wb") as fh:
        while chunk := resp.read(CHUNK):
            have += len(chunk)
            if have > max_bytes:
                raise UpdateError(f"{url}: more than updates.max_bytes ({max_bytes}) bytes")
            if not sized and have % ROOM_CHECK_BYTES < len(chunk):
                _check_room_so_far(url, dest, have)
            fh.write(chunk)
    return have


def _check_room_so_far(url: str, dest: Path, have: int) -> None:
    """A server that sends no Content-Length: the room is checked as the bytes come, each stretch of them
    needing as much again to unpack, so the card never fills up before the refusal."""
    free = shutil.disk_usage(dest.parent).free
    if have > free:
        raise UpdateError(f"{url}: {have} bytes so far (no Content-Length) and as many to unpack, only {free} free")


def download(
    url: str, dest: Path, max_bytes: int, timeout_s: float, attempts: int, backoff_s: float = BACKOFF_S
) -> Path:
    """Fetch ``url`` into ``dest``, resuming a partial file on each further attempt (waiting ``backoff_s``,
    then twice as long each time, up to BACKOFF_MAX_S). A resumed request sends ``If-Range`` with the
    validator (ETag, else Last-Modified) of the response the partial file came from, and a 206 answer must
    carry the same: a file replaced on the server since is fetched whole, never spliced onto the old one's
    beginning (busybox httpd, for one, ignores If-Range)."""
    if not re.match(r"^https?://", url):
        raise UpdateError(f"url must start with http:// or https://, not {url[:40]!r}")
    validator_file = dest.with_name(dest.name + ".validator")
    last = "no attempt made"
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(min(BACKOFF_MAX_S, backoff_s * 2 ** (attempt - 2)))
        validator = validator_file.read_text() if validator_file.exists() and dest.exists() else ""
        have = dest.stat().st_size if dest.exists() and validator else 0
        headers = {"User-Agent": f"smartbin/{__version__}"}
        if have:
            headers.update({"Range": f"bytes={have}-", "If-Range": validator})
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
            now = _validator(resp)
            if have and resp.status == 206 and now != validator:  # the rest of another file: start over
                resp.close()
                headers = {k: v for k, v in headers.items() if k not in ("Range", "If-Range")}
                resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
                now = _validator(resp)
            with resp:
                if resp.status != 206:  # the whole file
                    have = 0
                validator_file.write_text(now)
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                if total is not None:
                    _check_room(url, dest, total, have, max_bytes)
                have = _write_body(url, resp, dest, have, total is not None, max_bytes)
            if total is not None and have < total:
                raise http.client.IncompleteRead(b"", total - have)
            validator_file.unlink(missing_ok=True)
            return dest
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to fetch beyond what we have
                validator_file.unlink(missing_ok=True)
                return dest
            if 400 <= exc.code < 500:
                raise UpdateError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            last = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC:  # another attempt would only append to a full disk
                raise UpdateError(f"{url}: no space left in {dest.parent}") from None
            reason = getattr(exc, "reason", None) or exc
            last = f"{type(exc).__name__}: {reason}"
        log.warning("download of %s, attempt %d of %d: %s", url, attempt, attempts, last)
    raise UpdateError(f"{url}: download failed after {attempts} attempt(s): {last}")


def _validator(resp) -> str:
    """What names this version of the file on the server: its ETag, else its Last-Modified."""
    return resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""


def acceptance_test(classifier: Classifier) -> str:
    """Run the bundle's reference images through this device's engine: each must get the float model's top-1.

    The images are the ones the float model is surest of, so a sound engine cannot flip one; a single
    miss means the model, the engine or the file is not what the converter gated.
    """
    data = classifier.bundle.acceptance()
    if data is None:
        raise UpdateError(f"{classifier.bundle.path}: no acceptance set in the bundle (convert it with smartbin ≥ 0.1)")
    agree, images = reference_agreement(classifier.engine, data), len(data[0])
    if agree < images:
        raise UpdateError(
            f"acceptance test failed: {agree} of {images} reference images get the float model's top-1 "
            f"on this device ({classifier.engine.variant} on {classifier.engine.backend}); all must"
        )
    return f"{agree} of {images} reference images agree with the float model"


class Updater:
    """One update at a time, in its own thread; events come back through a queue the loop drains."""

    def __init__(self, store: ModelStore, load: Callable[[Path], Classifier], config: Callable[[], Config]):
        self.store = store
        self.load = load
        self.config = config  # the config in force when an update starts (a reload may change it)
        self.events: queue.SimpleQueue[tuple[UpdateRequest, str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def offer(self, request: UpdateRequest, prepared: Prepared) -> None:
        """A model prepared already (one that ran in the shadow): ready for the loop as a fetched one is."""
        self.events.put((request, "ready", prepared))

    def start(self, request: UpdateRequest, current: Bundle) -> None:
        if self.busy():
            raise UpdateError("an update is already running; wait for its result")
        config = self.config()
        if request.sha256 is None and config.updates.public_key is None:
            raise UpdateError("update_model needs 'sha256' (or updates.public_key in the config, for signed bundles)")
        variant = None if config.model.variant == "auto" else config.model.variant  # auto: any it holds
        args = (request, current, config.updates, variant)
        self._thread = threading.Thread(target=self._run, args=args, name="update", daemon=True)
        self._thread.start()

    def _run(self, request: UpdateRequest, current: Bundle, settings: UpdatesConfig, variant: str | None) -> None:
        try:
            self.events.put((request, "ready", self.prepare(request, current, settings, variant)))
        except SmartbinError as exc:
            self.events.put((request, "failed", str(exc)))
        except Exception as exc:  # an update must never take the bin down
            log.exception("update failed")
            self.events.put((request, "failed", f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.store.remove_leftovers()  # a failed download is not resumed by a later update

    def _stage(self, request: UpdateRequest, stage: str, **details: Any) -> None:
        log.info("update %s: %s", request.url, stage)
        self.events.put((request, "progress", {"stage": stage, **details}))

    def prepare(
        self, request: UpdateRequest, current: Bundle, settings: UpdatesConfig, variant: str | None
    ) -> Prepared:
        """Download, check, unpack and test ``request``'s bundle (``variant``: the one this device runs, an
        archive without it is refused before unpacking)."""
        self.store.root.mkdir(parents=True, exist_ok=True)
        partial = self.store.root / f".download-{hashlib.sha256(request.url.encode()).hexdigest()[:12]}.tar"
        self._stage(request, "downloading", url=request.url)
        download(request.url, partial, settings.max_bytes, settings.timeout_s, settings.attempts)
        self._stage(request, "verifying", bytes=partial.stat().st_size)
        digest = sha256_file(partial)
        if request.sha256 is not None and digest != request.sha256:
            partial.unlink(missing_ok=True)
            raise UpdateError(f"sha256 check failed: downloaded {digest[:12]}…, expected {request.sha256[:12]}…")
        try:
            folder = self.store.add(partial, digest, settings.max_bytes, settings.public_key, variant, current)
        finally:
            partial.unlink(missing_ok=True)
        try:
            bundle = Bundle.open(folder)
            if bundle.manifest.created < current.manifest.created and not request.force:
                raise UpdateError(
                    f"refused downgrade: {bundle.manifest.name} was made {bundle.manifest.created}, before the "
                    f"serving {current.manifest.name} ({current.manifest.created}); send force: true to install it"
                )
            self._stage(request, "testing", model=folder.name)
            classifier = self.load(folder)
            return Prepared(request, folder, classifier, acceptance_test(classifier))
        except Exception:
            self.store.discard(folder)
            raise
