"""A fleet for tests: several real daemons (each its own store, outbox and log) on one broker, each with a
looping clip as its camera."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT, poll, write_config
from tests.support.mqtt_client import Subscriber


def serving(sub: Subscriber) -> dict[str, str]:
    """Each bin's model folder, as its last retained …/model says."""
    return {m.topic.split("/")[1]: m.json()["folder"] for m in sub.on("model")}


class Fleet:
    """The daemons of a test fleet by device id, and a subscriber on all their topics."""

    def __init__(self, folder: Path, bundle: Path, clip: Path, port: int, device_ids: tuple[str, ...]):
        self.commands, self.processes, self.logs = {}, {}, []
        for device_id in device_ids:
            home = folder / device_id
            home.mkdir(parents=True)
            uri = f"file://{clip}?loop=1&realtime=1"
            config = write_config(home / "config.yaml", bundle, uri, port, device_id=device_id)
            self.commands[device_id] = ([sys.executable, "-m", "edge", "--config", str(config)], home / "daemon.log")
            self.start(device_id)
        self.sub = Subscriber(port, "smartbin/#")

    def start(self, device_id: str) -> None:
        """The daemon of ``device_id`` started (again, as its supervisor would), appending to its log."""
        command, log_path = self.commands[device_id]
        self.logs.append(log_path.open("a"))
        self.processes[device_id] = subprocess.Popen(command, cwd=ROOT, stdout=self.logs[-1], stderr=subprocess.STDOUT)

    def kill(self, device_id: str) -> None:
        self.processes[device_id].kill()
        self.processes[device_id].wait(30)

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(30)
        for log in self.logs:
            log.close()
        self.sub.client.disconnect()


@contextmanager
def running_fleet(folder: Path, bundle: Path, clip: Path, port: int, device_ids: tuple[str, ...]) -> Iterator[Fleet]:
    """The daemons up, each with its model retained."""
    fleet = Fleet(folder, bundle, clip, port, device_ids)
    try:
        assert poll(lambda: set(serving(fleet.sub)) >= set(device_ids), 60), (
            f"not every bin came up: {serving(fleet.sub)}"
        )
        yield fleet
    finally:
        fleet.stop()
