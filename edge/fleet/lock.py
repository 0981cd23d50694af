"""One rollout at a time across the fleet, and a record of it on the broker.

The lock is a retained message on ``<prefix>/_fleet/lock`` that names its owner; the rollout renews it while
it runs and clears it when it ends. Where the broker speaks MQTT 5 the broker itself forgets a lock not renewed
within its ``ttl_s`` (message expiry); on a 3.1.1 broker the lock's ``expires`` is read against this host's
clock. Two workstations that take it at the same moment both read back the one the broker kept last, and only
its owner goes on.

The record (``<prefix>/_fleet/rollout``, retained, no expiry) says which bins the rollout sent the release to
and what each served before. A rollout that ends puts its bins back and clears it; one that died leaves it, and
the next ``smartbin fleet rollout`` finds it and offers to finish (``--resume``) or undo (``--undo``) it.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time

from pydantic import ValidationError

from edge.errors import SmartbinError
from edge.fleet.view import FleetView
from edge.wire.fleet import LOCK, RECORD, RolloutLock, RolloutRecord

log = logging.getLogger(__name__)

TTL_S = 60.0  # a lock not renewed for this long is a dead rollout's
RENEW_S = 15.0
SETTLE_S = 1.0  # after taking the lock: the time for a rival's message to reach the broker and us


def owner() -> str:
    """``user@host pid``: who a lock or record belongs to, for a person to read."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def read_lock(view: FleetView) -> RolloutLock | None:
    """The lock as the broker keeps it (None: none, an expired one, one whose process on this host is gone, or
    one that cannot be read)."""
    lock = _read(view, LOCK, RolloutLock)
    if lock is None or lock.expires <= time.time():
        return None
    return None if lock.host == socket.gethostname() and not alive(lock.pid) else lock


def alive(pid: int) -> bool:
    """Whether a process of this host runs with that pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it runs
        return True
    return pid > 0


def read_record(view: FleetView) -> RolloutRecord | None:
    """The record of a rollout that has not ended (None: none)."""
    return _read(view, RECORD, RolloutRecord)


def _read(view: FleetView, name: str, kind: type):
    payload = view.fleet_message(name)
    if not payload:
        return None
    try:
        return kind.model_validate_json(payload)
    except ValidationError:
        log.warning("%s: not a record of this version; ignored", name)
        return None


class FleetLock:
    """The lock of one rollout: taken, renewed while it runs, let go at the end."""

    def __init__(self, view: FleetView, token: str):
        self.view, self.token = view, token
        self.started = time.time()
        self.owner = owner()
        self.renewed = 0.0

    def _publish(self) -> None:
        now = time.time()
        lock = RolloutLock(
            token=self.token,
            owner=self.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.started,
            expires=now + TTL_S,
            ttl_s=TTL_S,
        )
        self.view.publish_fleet(LOCK, lock.model_dump_json(), expiry_s=TTL_S)
        self.renewed = time.monotonic()

    def acquire(self) -> None:
        """Take the lock; SmartbinError naming the owner when another rollout holds it."""
        held = read_lock(self.view)
        if held is not None and held.token != self.token:
            raise SmartbinError(_held(held))
        self._publish()
        time.sleep(SETTLE_S)
        held = read_lock(self.view)
        if held is not None and held.token != self.token:  # a rival took it at the same moment, after us
            raise SmartbinError(_held(held))

    def renew(self) -> None:
        """Called while the rollout waits: the lock again when it is due."""
        if time.monotonic() - self.renewed >= RENEW_S:
            self._publish()

    def release(self) -> None:
        """Let go (only of our own lock: a rival's is left as it is)."""
        held = read_lock(self.view)
        if held is None or held.token == self.token:
            self.view.publish_fleet(LOCK, "")


def _held(lock: RolloutLock) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(lock.started))
    return (
        f"another rollout holds the fleet: {lock.owner}, since {since}; it is renewed while that rollout runs and "
        f"lapses {lock.ttl_s:.0f} s after it dies. Wait for it, or stop it where it runs"
    )


def save_record(view: FleetView, record: RolloutRecord) -> None:
    """The record as it stands now, on the broker."""
    view.publish_fleet(RECORD, record.model_dump_json())


def clear_record(view: FleetView) -> None:
    view.publish_fleet(RECORD, "")
