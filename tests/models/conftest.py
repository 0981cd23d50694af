"""The update tests' servers and bundles."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.tools.localbroker import free_port
from tests.support.updates import slim_copy


@pytest.fixture()
def web(tmp_path: Path):
    """(folder, base URL): a static HTTP server on loopback; busybox httpd, or Python's where it is absent."""
    root = tmp_path / "www"
    root.mkdir()
    port = free_port()
    if shutil.which("busybox"):
        command = ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(root)]
    else:
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield root, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(5)


@pytest.fixture()
def v1(tmp_path: Path, bundle_dir: Path) -> Path:
    return slim_copy(bundle_dir, tmp_path / "v1", "2026-01-01T00:00:00+00:00")


@pytest.fixture()
def v2(tmp_path: Path, other_bundle_dir: Path) -> Path:
    return slim_copy(other_bundle_dir, tmp_path / "v2", "2026-06-01T00:00:00+00:00")
