"""The bin's status page as the web tests reach it: a daemon started with the page on, and plain requests."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge.tools.localbroker import free_port
from tests.support import ROOT, write_config


def start(
    tmp_path: Path,
    bundle: Path,
    broker_port: int,
    web: dict,
    source: str = "synthetic://?items=0&fps=10&empty=10&present=10",
    **sections: dict,
) -> tuple[subprocess.Popen, int]:
    """A daemon with the page on (``web`` over the page's settings, ``sections`` over other sections')."""
    import yaml

    port = free_port()
    config = write_config(tmp_path / "web.yaml", bundle, source, broker_port)
    data = yaml.safe_load(config.read_text())
    data["web"].update(enabled=True, port=port)
    data["web"].update(web)
    for name, settings in sections.items():
        data.setdefault(name, {}).update(settings)
    data["source"]["roi"] = {"x": 0.1, "y": 0.1, "w": 0.8, "h": 0.8}
    config.write_text(yaml.safe_dump(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    return process, port


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/healthz", 1)[0] in (200, 503):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("status page did not come up")
