"""The decision outbox: SQLite (WAL), written before a decision is sent, deleted on the broker's PUBACK.

A broker outage, a restart or a power cut loses nothing; the backlog goes out in order.
It is bounded: beyond ``max_items`` the oldest are dropped, and the drops are counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge.storage.sqlitedb import Database

log = logging.getLogger(__name__)


class OutboxError(Exception):
    """The outbox file cannot be opened, read or written (permissions, full disk, corruption)."""


class Outbox:
    def __init__(self, path: str | Path, max_items: int = 10000):
        self.path = Path(path)
        self.max_items = max_items
        try:
            # synchronous=FULL: a decision survives a power cut once stored
            self.db = Database(path, OutboxError, ("journal_mode=WAL", "synchronous=FULL"))
            self.db.query(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, "
                "topic TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
            )
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
                    "INSERT OR IGNORE INTO outbox (event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                    (event_id, topic, json.dumps(payload, ensure_ascii=False), created),
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

    def pending(self, after_id: int = 0, limit: int = 100) -> list[tuple[int, str, str]]:
        """Unacknowledged messages in order: (row id, topic, payload JSON)."""
        rows = self.db.query(
            "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [(int(i), t, p) for i, t, p in rows]

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
