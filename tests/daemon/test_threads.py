"""What the loop writes and other threads read (paho's callbacks, web requests): windows and SQLite
files shared across threads, and SQLite failures surfacing as the project's own errors."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge.stats import Window
from edge.storage.counters import Counters, CountersError
from edge.storage.outbox import Outbox, OutboxError


def hammer(write, read, writers: int = 2, rounds: int = 400) -> list[BaseException]:
    """Writers and a reader at once; returns what any of them raised."""
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(work):
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def reader():
        while not done.is_set():
            read()

    threads = [
        threading.Thread(target=guarded, args=(lambda: [write(i) for i in range(rounds)],)) for _ in range(writers)
    ]
    reading = threading.Thread(target=guarded, args=(reader,))
    reading.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reading.join()
    return errors


def test_a_window_is_read_while_the_loop_appends():
    window = Window(1000)
    assert hammer(lambda i: window.append(float(i)), lambda: sum(1 for v in window.values() if v >= 0), 1, 50_000) == []
    assert len(window.values()) == 1000


def test_counters_shared_by_threads_count_every_item(tmp_path: Path):
    counters = Counters(tmp_path / "counters.sqlite")
    from edge.wire.payloads import Decision

    decision = Decision(
        event_id="0" * 32,
        ts=0,
        bin="other",
        label="cup",
        label_index=0,
        confidence=0.9,
        votes=1,
        frames=1,
        reason="vote",
        device_id="t",
    )
    assert hammer(lambda i: counters.count_decision(decision), counters.summary, writers=4, rounds=200) == []
    assert counters.summary()["total"]["per_label"] == {"cup": 800}


def test_sqlite_failures_are_the_projects_errors(tmp_path: Path):
    """A table gone (a damaged file, a hand edit) raises OutboxError / CountersError naming the file."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    counters = Counters(tmp_path / "counters.sqlite")
    for path, table in ((tmp_path / "outbox.sqlite", "outbox"), (tmp_path / "counters.sqlite", "counts")):
        other = sqlite3.connect(path)
        other.execute(f"DROP TABLE {table}")
        other.commit()
        other.close()
    for call in (outbox.pending, outbox.depth, lambda: outbox.add("e1", "t", {}, 0.0)):
        with pytest.raises(OutboxError, match="outbox.sqlite"):
            call()
    for call in (counters.summary, lambda: counters.count_correction("cup")):
        with pytest.raises(CountersError, match="counters.sqlite"):
            call()


SIGNAL_WHILE_LOCKED = """
import os, signal, sys, threading
from edge.system.signals import set_on

stop = threading.Event()
set_on(stop, signal.SIGTERM)
with stop._cond:  # the main thread holds the event's lock, as inside wait() or clear()
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, before the lock is let go
    for _ in range(1000):  # bytecodes, at which Python runs the handler
        pass
sys.exit(0 if stop.wait(60) else 3)
"""


def test_a_signal_arriving_while_the_event_is_locked_still_sets_it():
    """A real SIGTERM while the main thread holds the event's lock: it is set once the lock is free (an
    ``event.set`` handler would wait for the lock there forever; the daemon's back-off hung so)."""
    import subprocess
    import sys

    from tests.support import ROOT

    done = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_LOCKED], cwd=ROOT, timeout=120)
    assert done.returncode == 0
