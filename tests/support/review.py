"""The review station's tests share these: samples a running daemon kept, the JSON API, the server started
from the command line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.tools.localbroker import free_port
from tests.support import ROOT, start_daemon, write_config

KEPT = 6  # samples the daemon keeps before the review


def kept_samples(tmp_path: Path, bundle: Path, broker_port: int, clip: Path) -> Path:
    """The daemon on a looping clip, keeping every decision's frame, until KEPT whole samples are on disk."""
    config = write_config(
        tmp_path / "bin.yaml", bundle, f"file://{clip}?loop=1&realtime=1", broker_port, samples__confident_fraction=1.0
    )
    folder = tmp_path / "samples"
    process = start_daemon(config)
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*.json"))) < KEPT and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert len(list(folder.glob("*.json"))) >= KEPT, err[-2000:]
    return folder


def answer_of(folder: Path, sample_id: str) -> dict | None:
    """The answer saved beside a sample (None before one is given)."""
    return json.loads((folder / f"{sample_id}.json").read_text(encoding="utf-8")).get("correction")


def page_token(url: str) -> str:
    """The token the review page is served with (every request that changes something carries it)."""
    parts = urllib.parse.urlsplit(url)
    with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/", timeout=10) as response:
        return re.search(r'name="review-token" content="([^"]+)"', response.read().decode()).group(1)


def request(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """GET, or POST ``body`` as the page does (JSON, with the page's token unless ``headers`` give one)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    if body is not None:
        headers.setdefault("X-Review-Token", page_token(url))
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def reviewing(folder: Path, *options: str) -> Iterator[str]:
    """`smartbin review FOLDER --port P [options]`, as a user types it, up while the block runs: its URL. Its
    output goes to a file beside the folder (a pipe nobody reads would stall it)."""
    port = free_port()
    command = [sys.executable, "-m", "edge.cli", "review", str(folder), "--port", str(port), *options]
    log = folder.parent / f"review-{port}.log"
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not up(url) and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.1)
            assert up(url), f"smartbin review did not come up: {log.read_text(encoding='utf-8')[-2000:]}"
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)


def up(url: str) -> bool:
    try:
        return request(url + "api/items")[0] == 200
    except OSError:
        return False
