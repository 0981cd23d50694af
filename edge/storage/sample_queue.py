"""Which kept samples still go out over MQTT (``samples.over_mqtt``): their names in a table of the outbox's
SQLite file, written when the sample is, deleted on the broker's PUBACK. A restart, an outage or a power cut
loses none; the files themselves stay in the sample store (the byte cap may take one first: it is skipped).
Bounded: beyond ``max_items`` the oldest names go, counted."""

from __future__ import annotations

import logging

from edge.storage.outbox import Outbox, OutboxError

log = logging.getLogger(__name__)


class SampleQueue:
    """The names of the samples not yet acknowledged by the broker, oldest first."""

    def __init__(self, outbox: Outbox, max_items: int = 1000):
        self.db, self.max_items = outbox.db, max_items
        self.db.query("CREATE TABLE IF NOT EXISTS sample_queue (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)")
        self.dropped = 0

    def add(self, name: str) -> None:
        """Queue a sample just written (the sample store's thread); a failing disk costs its sending only."""
        try:
            with self.db.transaction() as db:
                db.execute("INSERT INTO sample_queue (name) VALUES (?)", (name,))
                excess = db.execute("SELECT COUNT(*) FROM sample_queue").fetchone()[0] - self.max_items
                if excess > 0:
                    db.execute(
                        "DELETE FROM sample_queue WHERE id IN (SELECT id FROM sample_queue ORDER BY id LIMIT ?)",
                        (excess,),
                    )
                    self.dropped += excess
        except OutboxError as exc:
            log.error("sample %s will not be sent over MQTT: %s", name, exc)

    def pending(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(row, name) of the samples not yet acknowledged, after row ``after_id``, in order."""
        return [(int(i), n) for i, n in self.db.query(
            "SELECT id, name FROM sample_queue WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )]  # fmt: skip

    def done(self, row_id: int) -> None:
        """Acknowledged by the broker, or gone from the store: forget it."""
        self.db.query("DELETE FROM sample_queue WHERE id = ?", (row_id,))

    def depth(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM sample_queue")[0][0])
