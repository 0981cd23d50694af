"""A broker on this machine for the demo, the benchmark and the tests: mosquitto when installed,
otherwise amqtt (an embedded Python broker; MQTT 3.1.1, fine for a demo, not for broker tests)."""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


PORT_RANGE = "SMARTBIN_PORT_RANGE"  # "LOW-HIGH": local ports are chosen only there (runs side by side)
_turn = itertools.count(random.randrange(1 << 16))


def free_port() -> int:
    """A loopback port nothing listens on now. Under ``SMARTBIN_PORT_RANGE`` the ports come from that range
    alone, in turn: parallel test workers each given a range of their own never pick the same port between
    choosing it and a server binding it (the kernel's ephemeral range, above 32767, stays out of it)."""
    spec = os.environ.get(PORT_RANGE)
    if not spec:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = (int(part) for part in spec.split("-"))
    for _ in range(high - low + 1):
        port = low + next(_turn) % (high - low + 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"{PORT_RANGE}={spec}: no free port left")


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class LocalBroker:
    """Start with ``start()``; ``stop()``/``start()`` again simulate an outage on the same port."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        prefer: str = "mosquitto",
        extra_config: str = "",
        persistence: bool = True,
    ):
        self.port = port or free_port()
        # A folder we made is ours to remove on close(); a folder the caller gave stays.
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="smartbin-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kind = "mosquitto" if prefer == "mosquitto" and mosquitto_path() else "amqtt"
        self.extra_config = extra_config
        self.persistence = persistence
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{self.kind}.log"

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            config = self.workdir / "mosquitto.conf"
            # As root, mosquitto would drop to its own user and could not read our (private) files.
            user = ["user root"] if os.geteuid() == 0 else []
            lines = [
                *user,
                f"listener {self.port} 127.0.0.1",
                "set_tcp_nodelay true",  # messages to subscribers go out at once, as from our clients
                "allow_anonymous true",
                f"persistence {'true' if self.persistence else 'false'}",
                f"persistence_location {self.workdir}/",
                "log_dest stderr",
                self.extra_config,
            ]
            config.write_text("\n".join(lines) + "\n")
            return [mosquitto_path(), "-c", str(config)]
        config = self.workdir / "amqtt.yaml"
        config.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        amqtt = Path(sys.executable).with_name("amqtt")
        return [str(amqtt), "-c", str(config)]

    def start(self, timeout: float = 10.0) -> LocalBroker:
        with self.log_path.open("ab") as log_file:  # the broker keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self._command(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_for_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"{self.kind} did not start on port {self.port}; see {self.log_path}")
        log.info("%s broker on 127.0.0.1:%d", self.kind, self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop for good: also remove the working folder when this broker made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
