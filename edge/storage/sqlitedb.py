"""One SQLite connection shared by the daemon's threads: every statement under one lock, every
error turned into the caller's own exception (so a full disk never surfaces as a raw sqlite3.Error
in paho's thread or a web request)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """``sqlite3`` behind a lock. ``error`` is the exception raised, with the file named, on any failure."""

    def __init__(self, path: str | Path, error: type[Exception], pragmas: tuple[str, ...] = ("journal_mode=WAL",)):
        self.path = str(path)
        self.error = error
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # autocommit: transactions are explicit (``transaction``), so none is left open by accident
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            for pragma in pragmas:
                self._db.execute(f"PRAGMA {pragma}")
        except (sqlite3.Error, OSError) as exc:
            raise error(f"{self.path}: cannot open: {exc}") from exc

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Run one statement and return its rows."""
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self.error(f"{self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` under the lock; rolled back (and raised as ``error``) on failure."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self.error(f"{self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def close(self) -> None:
        with self._lock:
            self._db.close()
