"""The decision outbox: SQLite (WAL), written before a decision is sent, deleted on the broker's PUBACK.

A broker outage, a restart or a power cut loses nothing; the backlog goes out in order.
It is bounded: beyond ``max_items`` the oldest are dropped, and the drops are counted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class OutboxError(Exception):
    """The outbox file cannot be opened or written (permissions, full disk)."""


class Outbox:
    def __init__(self, path: str | Path, max_items: int = 10000):
        self.path = Path(path)
        self.max_items = max_items
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a decision survives a power cut once stored
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, "
                "topic TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
            )
            self.db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            result = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"{self.path}: cannot open outbox: {exc}") from exc
        if result != "ok":
            raise OutboxError(f"{self.path}: outbox is corrupt: {result}")

    def add(self, event_id: str, topic: str, payload: dict, created: float) -> int:
        """Store a message durably; returns its row id. Drops the oldest beyond ``max_items``."""
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                    (event_id, topic, json.dumps(payload, ensure_ascii=False), created),
                )
                excess = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.max_items
                if excess > 0:
                    self.db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                    )
                    self._bump("dropped", excess)
                    log.warning("outbox full: dropped the %d oldest decision(s)", excess)
                self.db.execute("COMMIT")
                return int(cursor.lastrowid)
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot store decision: {exc}") from exc

    def _bump(self, name: str, by: int) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def pending(self, after_id: int = 0, limit: int = 100) -> list[tuple[int, str, str]]:
        """Unacknowledged messages in order: (row id, topic, payload JSON)."""
        with self._lock:
            return self.db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()

    def ack(self, row_id: int) -> None:
        """The broker has it: forget it."""
        with self._lock:
            try:
                self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            except sqlite3.Error as exc:
                log.error("%s: cannot delete acknowledged message %d: %s", self.path, row_id, exc)

    def depth(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dropped(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
            return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self.db.close()
