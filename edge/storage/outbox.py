"""The decision outbox: SQLite (WAL), written before a decision is sent, deleted on the broker's PUBACK.

A broker outage, a restart or a power cut loses nothing; the backlog goes out in order. Each row records the
boot it was stored in (edge/system/boot.py), so that what was decided before a power cut is sent marked as such.
It is bounded: beyond ``max_items`` the oldest are dropped, and the drops are counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

from edge.errors import SmartbinError
from edge.storage.sqlitedb import Database
from edge.system.boot import boot_id

log = logging.getLogger(__name__)


class OutboxError(SmartbinError):
    """The outbox file cannot be opened, read or written (permissions, full disk, corruption)."""


class Pending(NamedTuple):
    """An unacknowledged message. ``earlier_boot``: stored before this host last started (or by a release that
    did not record it): whatever its time says, it is about an item long gone."""

    row_id: int
    topic: str
    payload: str
    earlier_boot: bool


class Outbox:
    def __init__(self, path: str | Path, max_items: int = 10000):
        self.path = Path(path)
        self.max_items = max_items
        try:
            # synchronous=FULL: a decision survives a power cut once stored
            self.db = Database(path, OutboxError, ("journal_mode=WAL", "synchronous=FULL"))
            self.db.query(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, "
                "topic TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL, boot TEXT)"
            )
            columns = {row[1] for row in self.db.query("PRAGMA table_info(outbox)")}
            if "boot" not in columns:  # an outbox of an earlier release: its rows' boot is unknown
                self.db.query("ALTER TABLE outbox ADD COLUMN boot TEXT")
            self.db.query("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            result = self.db.query("PRAGMA integrity_check")[0][0]
        except OutboxError as exc:
            raise OutboxError(f"cannot open outbox: {exc}") from exc
        if result != "ok":
            raise OutboxError(f"{self.path}: outbox is corrupt: {result}")

    def add(self, event_id: str, topic: str, payload: dict, created: float) -> int:
        """Store a message durably; returns its row id. Drops the oldest beyond ``max_items``."""
        try:
            with self.db.transaction() as db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, topic, payload, created, boot) VALUES (?, ?, ?, ?, ?)",
                    (event_id, topic, json.dumps(payload, ensure_ascii=False), created, boot_id()),
                )
                excess = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.max_items
                if excess > 0:
                    db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
                    db.execute(
                        "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + ?",
                        (excess, excess),
                    )
                    log.warning("outbox full: dropped the %d oldest decision(s)", excess)
                return int(cursor.lastrowid)
        except OutboxError as exc:
            raise OutboxError(f"cannot store decision: {exc}") from exc

    def pending(self, after_id: int = 0, limit: int = 100) -> list[Pending]:
        """Unacknowledged messages in order."""
        rows = self.db.query(
            "SELECT id, topic, payload, boot FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [Pending(int(i), t, p, b != boot_id()) for i, t, p, b in rows]

    def ack(self, row_id: int) -> None:
        """The broker has it: forget it."""
        try:
            self.db.query("DELETE FROM outbox WHERE id = ?", (row_id,))
        except OutboxError as exc:
            log.error("cannot delete acknowledged message %d: %s", row_id, exc)

    def depth(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM outbox")[0][0])

    def dropped(self) -> int:
        rows = self.db.query("SELECT value FROM counters WHERE name = 'dropped'")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        self.db.close()
