"""The device's versioned model store: ``<store>/<name>-<sha12>/`` folders, a ``current`` link and a state file.

The choice of model outlives restarts. A switch opens a health window; a daemon that starts and
finds the window still open died inside it, so it rolls back to the previous model by itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import SmartbinError
from edge.formats.archive import unpack
from edge.formats.bundle import Bundle
from edge.runtime.onnx import share_engine_cache
from edge.system.atomic import temporary_name, write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CURRENT_LINK = "current"


class UpdateError(SmartbinError):
    """An update that cannot be carried out; the model that serves stays."""


@dataclass
class StoreState:
    """What runs and what ran before: folder names inside the store (or absolute bundle paths)."""

    current: str | None = None
    previous: str | None = None
    sha256: str | None = None  # of the archive the current model came from
    since: float | None = None
    trial_until: float | None = None  # wall clock; set while the health window is open
    outcome: dict = field(default_factory=dict)  # the last switch or rollback, for the model topic


class ModelStore:
    def __init__(self, root: Path, keep: int):
        self.root = Path(root)
        self.keep = keep

    # ------------------------------------------------------------------ state
    def state(self) -> StoreState:
        path = self.root / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return StoreState(**{k: v for k, v in data.items() if k in StoreState.__dataclass_fields__})
        except FileNotFoundError:
            return StoreState()
        except (OSError, ValueError, TypeError) as exc:
            log.error("%s: unreadable (%s); serving the configured model", path, exc)
            return StoreState()

    def _save(self, state: StoreState) -> None:
        """Crash-safe: a temporary file renamed over the old one, the link swapped the same way."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / STATE_FILE, json.dumps(asdict(state), indent=2).encode("utf-8"))
        if state.current:
            link = temporary_name(self.root / CURRENT_LINK)
            link.unlink(missing_ok=True)
            link.symlink_to(state.current)
            link.replace(self.root / CURRENT_LINK)

    def path(self, name: str) -> Path:
        """A state entry as a folder: a name inside the store, or an absolute path (the configured bundle)."""
        return Path(name) if os.path.isabs(name) else self.root / name

    def current(self) -> Path | None:
        """The model the store chose (None before the first update, or when its folder is gone)."""
        state = self.state()
        if not state.current:
            return None
        path = self.path(state.current)
        if not path.is_dir():
            log.error("%s: the model store's current model is missing; serving the configured one", path)
            return None
        return path

    def start_candidates(self, configured: Path) -> list[Path]:
        """What to try at start, in order: the store's current model, the one before it, the configured bundle."""
        state = self.state()
        paths = [self.current(), self.path(state.previous) if state.previous else None, Path(configured)]
        seen: set[Path] = set()
        out = []
        for path in paths:
            if path is not None and path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(path)
        return out

    def resolve(self, name: str) -> Path:
        """``reload_model`` by name: a folder of the store; anything else is taken as a path."""
        candidate = self.root / name
        if "/" not in name and candidate.is_dir():
            return candidate
        return Path(name)

    # ------------------------------------------------------------------ changes
    def add(
        self,
        archive: Path,
        sha256: str,
        max_bytes: int,
        public_key: str | None = None,
        variant: str | None = None,
        base: Bundle | None = None,
    ) -> Path:
        """Check, unpack and verify a downloaded archive into ``<bundle name>-<sha12>`` (see ``unpack``; a head
        update's backbone files, and a TensorRT engine built for them, are linked from ``base``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".unpack-{sha256[:12]}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            bundle = unpack(archive, staging, max_bytes, public_key, variant, base)
            if base is not None and bundle.manifest.head is not None:
                share_engine_cache(base.path, staging)
        except BaseException:  # a refusal or a full disk: half a bundle is only in the way
            shutil.rmtree(staging, ignore_errors=True)
            raise
        folder = self.root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', bundle.manifest.name)}-{sha256[:12]}"
        if folder.exists() and folder.name not in (self.state().current, self.state().previous):
            shutil.rmtree(folder)  # the same model fetched again: the fresh copy replaces it
        if folder.exists():
            shutil.rmtree(staging)
        else:
            staging.rename(folder)
        return folder

    def remove_leftovers(self) -> list[str]:
        """Downloads, unpacks and installs a killed or failed update left behind (``.download-*``, ``.unpack-*``,
        ``.install-*``): nothing resumes them, and on a small card they are in the way of the next one. Returns
        their names."""
        gone = []
        leftovers = [p for kind in (".download-*", ".unpack-*", ".install-*") for p in self.root.glob(kind)]
        for path in leftovers if self.root.is_dir() else []:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            gone.append(path.name)
        if gone:
            log.info("%s: removed what an unfinished update left: %s", self.root, ", ".join(sorted(gone)))
        return gone

    def install(self, bundle_dir: Path) -> Path:
        """A bundle copied in by hand (install.sh --bundle): verified, copied to ``<store>/<folder name>``
        and made current, so that the store's choice and what the installer put there are one thing."""
        Bundle.open(bundle_dir).verify()
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / Path(bundle_dir).resolve().name
        staging = self.root / f".install-{folder.name}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(bundle_dir, staging, symlinks=False)
        state = self.state()
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        previous = self.path(state.current) if state.current and state.current != folder.name else None
        self.switch(folder, previous, None, 0)
        return folder

    def discard(self, folder: Path) -> None:
        """Remove a model that was refused, unless it is the current or previous one."""
        state = self.state()
        if folder.name not in (state.current, state.previous):
            shutil.rmtree(folder, ignore_errors=True)

    def switch(
        self, folder: Path, previous: Path | None, sha256: str | None, window_s: float, reason: str | None = None
    ) -> StoreState:
        """Make ``folder`` current (the health window opens) and remember what served before, and why."""
        now = time.time()
        state = StoreState(
            current=self._name(folder),
            previous=self._name(previous) if previous is not None else None,
            sha256=sha256,
            since=now,
            trial_until=now + window_s if window_s > 0 else None,
            outcome={"event": "switched", "ts": round(now, 3), **({"reason": reason} if reason else {})},
        )
        self._save(state)
        return state

    def confirm(self) -> StoreState:
        """The health window passed: the new model stays, older ones beyond ``keep`` go."""
        state = self.state()
        state.trial_until = None
        state.outcome = {"event": "confirmed", "ts": round(time.time(), 3)}
        self._save(state)
        self.prune(state)
        return state

    def rollback(self, reason: str, to: Path | None = None) -> StoreState:
        """Back to the previous model (or ``to``); the failed one is recorded (and left on disk for a look)."""
        state = self.state()
        failed = state.current
        state.current, state.previous = (self._name(to) if to is not None else state.previous), None
        state.sha256, state.since, state.trial_until = None, time.time(), None
        state.outcome = {"event": "rolled_back", "failed": failed, "reason": reason, "ts": round(time.time(), 3)}
        self._save(state)
        log.error("rolled back from %s: %s", failed, reason)
        return state

    def interrupted(self) -> None:
        """A clean stop inside the health window: the next start opens the window again instead of rolling back."""
        state = self.state()
        state.outcome = {**state.outcome, "stopped_in_window": True}
        self._save(state)

    def recover(self, window_s: float) -> StoreState | None:
        """At start: a health window still open means the last run died in it (roll back), unless it was
        stopped cleanly (the window opens again). None when there is nothing to do."""
        state = self.state()
        if state.trial_until is None or not state.previous:
            return None
        if state.outcome.pop("stopped_in_window", False):
            state.trial_until = time.time() + window_s
            self._save(state)
            return state
        return self.rollback("the daemon stopped inside the health window after the switch")

    def prune(self, state: StoreState | None = None) -> None:
        """Keep the newest ``keep`` model folders; never the current or previous one."""
        state = state or self.state()
        keep = {state.current, state.previous}
        folders = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        kept = 0
        for folder in folders:
            if folder.name in keep or kept < self.keep - len(keep - {None}):
                kept += folder.name not in keep
                continue
            shutil.rmtree(folder, ignore_errors=True)
            log.info("model store: removed %s (keeping %d)", folder.name, self.keep)

    def _name(self, folder: Path) -> str:
        """A folder as the state records it. Links are followed: the shipped configs name the ``current``
        link as their bundle, and the store moves that link on every switch."""
        folder = Path(folder).resolve()
        return folder.name if folder.parent == self.root.resolve() else str(folder)
