"""A RabbitMQ node with its MQTT plugin (Debian's rabbitmq-server), started for one test in a folder of its own:
a broker users bring that speaks MQTT 3.1.1 only (3.10 in Debian 12) and has no message expiry or user
properties. Debian's wrapper runs the node as the ``rabbitmq`` user, so its folder is handed to that user."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from edge.tools.localbroker import free_port


def rabbitmq_missing() -> str | None:
    """Why no node can start here (None: it can)."""
    if shutil.which("rabbitmq-server") is None:
        return "needs Debian's rabbitmq-server (installed by .ci/run)"
    if os.geteuid() == 0 and shutil.which("chown") is None:
        return "needs chown to hand the node its folder"
    return None


class RabbitNode:
    """``with RabbitNode() as node:`` a running node; ``node.mqtt_port`` takes MQTT 3.1.1 clients. Its folder is
    made under the system's temporary folder (a test's own is root's alone, and the node runs as ``rabbitmq``)
    and removed after."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="smartbin-rabbitmq-"))
        self.folder.chmod(0o755)
        self.mqtt_port, amqp, dist = free_port(), free_port(), free_port()
        self.name = f"smartbin-{self.mqtt_port}@localhost"
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
        )
        (self.folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        for sub in ("mnesia", "log", "schema", "config", "plugins"):
            (self.folder / sub).mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "HOME": str(self.folder),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_SCHEMA_DIR": str(self.folder / "schema"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(self.folder / "config"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.folder / "plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.folder / "feature_flags"),
            "RABBITMQ_DIST_PORT": str(dist),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RabbitNode:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.folder)], check=True)
        with (self.folder / "node.out").open("w") as out:
            self.process = subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"RabbitMQ did not start: {(self.folder / 'node.out').read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.name, "stop"], env=self.env, capture_output=True, timeout=60)
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class RabbitCluster:
    """``with RabbitCluster(3) as cluster:`` nodes started side by side, the others joined to the first (Debian's
    wrapper runs each as ``rabbitmq``, whose one Erlang cookie they share); ``kill(node)`` as a power cut does."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RabbitNode() for _ in range(size)]

    def __enter__(self) -> RabbitCluster:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            started = list(pool.map(_start, self.nodes))
        if not all(started):
            self.__exit__()
            raise RuntimeError("a RabbitMQ node did not start")
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for step in (["stop_app"], ["join_cluster", first.name], ["start_app"]):
                done = subprocess.run(["rabbitmqctl", "-n", node.name, *step], env=node.env, capture_output=True,
                                      text=True, timeout=120)  # fmt: skip
                if done.returncode != 0:
                    self.__exit__()
                    raise RuntimeError(f"{node.name} {' '.join(step)}: {done.stderr[-1000:]}")
        return self

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL to the node's Erlang VM and its wrappers: no goodbye to its clients, no handover. (Found by
        descent: su starts the node in a session of its own, and its command line does not name it.)"""
        if node.process is None:
            return
        for pid in [*_descendants(node.process.pid), node.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(30)
        deadline = time.monotonic() + 30  # the VM's threads and sockets go a moment after the signal
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=1).close()
                time.sleep(0.1)
            except OSError:
                return
        raise RuntimeError(f"{node.name} still answers after SIGKILL")

    def __exit__(self, *exc) -> None:
        for node in self.nodes:
            node.__exit__()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def _start(node: RabbitNode) -> bool:
    try:
        node.__enter__()
        return True
    except RuntimeError:
        return False
