"""The model store on a device's disk (which models it keeps, a health window across a stop or a crash) and
the download of an update (resumed, capped, retried with back-off) against a real HTTP server."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge.models.store import ModelStore
from edge.models.update import UpdateError, download


def interrupted_download(url: str, partial: Path, keep: int) -> None:
    """What an attempt cut off after ``keep`` bytes leaves: the bytes and the response's validator."""

    with urllib.request.urlopen(url, timeout=10) as resp:
        partial.write_bytes(resp.read(keep))
        partial.with_name(partial.name + ".validator").write_text(resp.headers["ETag"] or resp.headers["Last-Modified"])


def test_download_resumes_a_partial_file_and_respects_the_size_cap(tmp_path, web):
    root, base = web
    rng = np.random.default_rng(0)
    payload = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(payload)
    partial = tmp_path / "blob.part"
    interrupted_download(f"{base}/blob.bin", partial, 120_000)
    # the resumed request asks for the rest only: the server's log would show it; here, the bytes that
    # come back are the rest (a server ignoring Range sends the whole file, which is also handled)
    download(f"{base}/blob.bin", partial, max_bytes=1_000_000, timeout_s=10, attempts=1)
    assert partial.read_bytes() == payload
    # the file is replaced on the server between two attempts: the download starts over, never splices
    interrupted_download(f"{base}/blob.bin", partial, 120_000)
    replaced = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(replaced)
    os.utime(root / "blob.bin", (time.time() + 5, time.time() + 5))  # a new modification time, as a new upload
    download(f"{base}/blob.bin", partial, max_bytes=1_000_000, timeout_s=10, attempts=1)
    assert partial.read_bytes() == replaced
    with pytest.raises(UpdateError, match="max_bytes"):
        download(f"{base}/blob.bin", tmp_path / "capped", max_bytes=100_000, timeout_s=10, attempts=1)


def test_download_retries_back_off(tmp_path):
    """Each retry waits twice as long as the one before (seen from the server: when the attempts arrive)."""
    server = socket.create_server(("127.0.0.1", 0))
    arrivals: list[float] = []

    def refuse():
        while len(arrivals) < 3:
            conn, _ = server.accept()
            arrivals.append(time.monotonic())
            conn.close()  # no HTTP answer: a failed attempt

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x.tar"
    with pytest.raises(UpdateError, match="download failed after 3 attempt"):
        download(url, tmp_path / "none", max_bytes=10, timeout_s=5, attempts=3, backoff_s=0.3)
    thread.join(5)
    server.close()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(gaps) == 2 and gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # lower bounds: sleeps, not speed


def test_the_store_keeps_the_newest_models_and_never_the_serving_ones(tmp_path):
    store = ModelStore(tmp_path / "models", keep=3)
    folders = []
    for i in range(6):
        folder = store.root / f"m{i}"
        folder.mkdir(parents=True)
        folders.append(folder)
        time.sleep(0.01)  # distinct modification times order them
    store.switch(folders[0], folders[1], None, 0)  # the oldest two serve / served
    store.confirm()
    left = sorted(p.name for p in store.root.iterdir() if p.is_dir() and not p.is_symlink())
    assert left == ["m0", "m1", "m5"], left


def test_a_clean_stop_in_the_health_window_reopens_it_and_a_crash_rolls_back(tmp_path):
    store = ModelStore(tmp_path / "models", keep=3)
    old, new = store.root / "old", store.root / "new"
    old.mkdir(parents=True)
    new.mkdir()
    store.switch(new, old, "ab" * 32, window_s=60)
    store.interrupted()  # SIGTERM inside the window
    reopened = store.recover(window_s=60)
    assert reopened.current == "new" and reopened.trial_until > time.time() and store.current() == new
    back = store.recover(window_s=60)  # this time the process died without a word
    assert back.current == "old" and back.outcome["event"] == "rolled_back" and back.outcome["failed"] == "new"
    assert os.readlink(store.root / "current") == "old" and store.recover(window_s=60) is None
