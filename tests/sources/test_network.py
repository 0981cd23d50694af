"""Network inputs against real servers on loopback: an image URL served by an HTTP server, an MJPEG
stream served by Debian's ffmpeg, and an RTSP camera served by Debian's GStreamer RTSP server,
each including the reconnect when the server goes away and comes back."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.sources import Capture, open_source
from edge.tools.localbroker import free_port
from tests.support import ROOT, drain
from tests.support.servers.mjpeg import serve

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = ROOT / "tests" / "support" / "servers" / "rtsp_server.py"


def real_photo() -> Path:
    """A photograph no one here made: the one matplotlib ships (Grace Hopper)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture()
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The standard library's HTTP server on a free port, serving a folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_predict_from_an_image_url(bundle_dir: Path, http_folder, capsys):
    from edge.cli import main

    folder, port = http_folder
    shutil.copy(real_photo(), folder / "item.jpg")
    url = f"http://127.0.0.1:{port}/item.jpg"
    assert main(["predict", str(bundle_dir), url, str(real_photo()), "--json"]) == 0
    from_url, from_file = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    labels = json.loads((bundle_dir / "manifest.json").read_text())["labels"]
    assert from_url["label"] in {label["name"] for label in labels}
    # the same bytes over HTTP and from disk: the same answer
    assert from_url["top_k"] == from_file["top_k"] and from_url["image"] == url


def start_mjpeg_server(port: int) -> subprocess.Popen:
    """ffmpeg as a one-client HTTP server of a multipart JPEG stream (what IP cameras serve)."""
    return serve(port)


def start_rtsp_server(port: int, pattern: str = "ball") -> subprocess.Popen:
    process = subprocess.Popen(
        [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(port), pattern],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready", "the RTSP server did not start"
    return process


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(10)


def gst_rtsp_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is absent"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True
    )
    if probe.returncode:
        return "Debian's GStreamer RTSP server is not installed (python3-gi, gir1.2-gst-rtsp-server-1.0)"
    return None


SERVERS = {
    "http-mjpeg": (start_mjpeg_server, "http://127.0.0.1:{port}/cam.mjpg", lambda: shutil.which("ffmpeg") is None),
    "rtsp": (start_rtsp_server, "rtsp://127.0.0.1:{port}/live", gst_rtsp_missing),
}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_network_camera_streams_and_reconnects(kind: str):
    start, uri_pattern, missing = SERVERS[kind]
    if missing():
        pytest.skip(f"{kind}: the server is not installed here ({missing() or 'ffmpeg'}); .ci/run installs it")
    port = free_port()
    server = start(port)
    capture = Capture(lambda: open_source(uri_pattern.format(port=port)), frozen_after_s=0, backoff_s=(0.2, 1.0))
    capture.start()
    try:
        first = drain(capture, 5, timeout=20)
        assert len(first) == 5, capture.health
        assert first[0].image.shape == (240, 320, 3)
        assert capture.health.state == "ok" and capture.source.describe()["width"] == 320

        stop(server)  # the camera goes away: capture says so and keeps trying
        assert wait_until(lambda: capture.health.state == "reconnecting"), capture.health
        assert capture.health.error and uri_pattern.split(":")[0] in capture.health.error

        server = start(port)  # and comes back: frames flow again, ids still rising
        again = drain(capture, 5, after=first[-1].frame_id, timeout=20)
        assert len(again) == 5, capture.health
        assert capture.health.state == "ok" and capture.health.reconnects >= 1
    finally:
        capture.stop()
        stop(server)


def test_a_still_rtsp_stream_is_not_a_frozen_camera():
    """An empty bin that nothing drops into, over RTSP: every frame decodes to the same pixels (checked),
    yet the stream's clock advances, so it is never taken for a frozen camera (frozen_after_s 1 s,
    watched for 15 s); the same pictures from a camera whose clock stands still are (tests/sources/test_sources.py)."""
    if gst_rtsp_missing():
        pytest.skip(f"rtsp: {gst_rtsp_missing()}; .ci/run installs it")
    port = free_port()
    server = start_rtsp_server(port, "solid-color")
    capture = Capture(lambda: open_source(f"rtsp://127.0.0.1:{port}/live"), frozen_after_s=1, backoff_s=(0.2, 1.0))
    capture.start()
    try:
        frames = drain(capture, 2, timeout=20)
        assert len(frames) == 2 and np.array_equal(frames[0].image, frames[1].image)  # a truly still picture
        deadline, last = time.monotonic() + 15, frames[-1].frame_id
        while time.monotonic() < deadline:
            frame = capture.next_frame(last, timeout=2)
            assert frame is not None, capture.health
            last = frame.frame_id
    finally:
        capture.stop()
        stop(server)
    assert capture.health.reconnects == 0 and capture.health.state == "ok", capture.health
