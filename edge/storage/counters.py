"""Items sorted per label and per bin, per day, in SQLite: the counts outlive restarts and reboots.

The share of low-confidence decisions today is the drift signal: it climbs when the bin meets
objects its model was not trained on (time to pull samples and retrain).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import SmartbinError
from edge.formats.labels import BINS
from edge.storage.sqlitedb import Database

if TYPE_CHECKING:
    from edge.wire.payloads import Decision

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    day TEXT NOT NULL,      -- local date, YYYY-MM-DD
    kind TEXT NOT NULL,     -- label | bin | reason | correction
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (day, kind, key)
)
"""


def today() -> str:
    return dt.date.today().isoformat()


class CountersError(SmartbinError):
    """The counts file cannot be opened, read or written."""


class Counters:
    """Written by the loop, read by MQTT metrics and the web page's threads: one locked connection."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.db = Database(path, CountersError)
        self.db.query(SCHEMA)

    def add(self, entries: list[tuple[str, str]], day: str | None = None) -> None:
        """Count one of each (kind, key) for ``day`` (default today), in one transaction."""
        day = day or today()
        with self.db.transaction() as db:
            db.executemany(
                "INSERT INTO counts (day, kind, key, n) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (day, kind, key) DO UPDATE SET n = n + 1",
                [(day, kind, key) for kind, key in entries],
            )

    def count_decision(self, decision: Decision) -> None:
        self.add([("label", decision.label), ("bin", decision.bin), ("reason", decision.reason)])

    def count_correction(self, label: str) -> None:
        self.add([("correction", label)])

    def _sums(self, where: str, args: tuple) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        query = f"SELECT kind, key, SUM(n) FROM counts WHERE {where} GROUP BY kind, key"
        for kind, key, n in self.db.query(query, args):
            out.setdefault(kind, {})[key] = n
        return out

    def summary(self) -> dict:
        """Today's and all-time counts: per bin, per label, corrections, and today's low-confidence share."""
        day, total = self._sums("day = ?", (today(),)), self._sums("1", ())
        decided = sum(day.get("reason", {}).values())
        low = day.get("reason", {}).get("low_confidence", 0)
        return {
            "today": {
                "items": decided,
                "per_bin": {b: day.get("bin", {}).get(b, 0) for b in BINS},
                "per_label": day.get("label", {}),
                "low_confidence_share": round(low / decided, 4) if decided else 0.0,
            },
            "total": {
                "items": sum(total.get("reason", {}).values()),
                "per_bin": {b: total.get("bin", {}).get(b, 0) for b in BINS},
                "per_label": total.get("label", {}),
                "corrections": total.get("correction", {}),
            },
        }

    def close(self) -> None:
        self.db.close()
