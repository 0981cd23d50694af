"""A network camera from Debian's ffmpeg: a multipart-JPEG stream over HTTP, what IP cameras serve.

ffmpeg with ``-listen 1`` serves one client and ends when it goes; ``MjpegCamera`` starts it again
for the next one, at the clip's current position (the camera's view runs on whether or not anyone
watches), and can be lost for a while (nothing listens) and restored.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"


def serving(port: int) -> bool:
    """Whether 127.0.0.1:port listens or already serves a client (read from /proc, without connecting):
    ffmpeg with ``-listen 1`` closes its listening socket on its first client, which a reconnecting
    camera client may be within milliseconds."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state in (LISTEN, ESTABLISHED) and int(local.split(":")[1], 16) == port:
            return True
    return False


def serve(port: int, clip: Path | None = None, start_s: float = 0.0) -> subprocess.Popen:
    """One ffmpeg server: ``clip`` from ``start_s`` at its real pace, or ffmpeg's moving test pattern."""
    source = (
        ["-ss", f"{start_s:.2f}", "-i", str(clip)] if clip else ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=15"]
    )
    with tempfile.TemporaryFile() as errors:  # ffmpeg keeps its own descriptor of it
        process = subprocess.Popen(
            [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *source,
                "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam.mjpg",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )  # fmt: skip
        deadline = time.monotonic() + 30  # ffmpeg serves one client only: look for its socket, do not connect
        while not serving(port) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is not None or not serving(port):
            process.kill()
            process.wait()
            errors.seek(0)
            raise RuntimeError(f"ffmpeg did not listen on {port}: {errors.read().decode(errors='replace')[-500:]}")
    return process


class MjpegCamera:
    """A clip served as a live camera on 127.0.0.1:``port``, following the clock from ``t0``."""

    def __init__(self, clip: Path, port: int):
        self.clip, self.port = clip, port
        self.url = f"http://127.0.0.1:{port}/cam.mjpg"
        self.t0 = time.monotonic()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, at_s: float = 0.0) -> None:
        self.t0 = time.monotonic() - at_s
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._lost.is_set():
                time.sleep(0.05)
                continue
            self._process = serve(self.port, self.clip, time.monotonic() - self.t0)
            while self._process.poll() is None and not self._stop.is_set() and not self._lost.is_set():
                time.sleep(0.05)
            self._kill()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)

    def lose(self) -> None:
        """The camera goes away: the stream stops and nothing listens until ``restore``."""
        self._lost.set()

    def restore(self) -> None:
        self._lost.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._kill()
