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


@contextmanager
def running_fleet(
    folder: Path, bundle: Path, clip: Path, port: int, device_ids: tuple[str, ...]
) -> Iterator[Subscriber]:
    """The daemons up, each with its model retained; a subscriber on every topic of theirs."""
    processes, logs = [], []
    for device_id in device_ids:
        home = folder / device_id
        home.mkdir(parents=True)
        config = write_config(
            home / "config.yaml", bundle, f"file://{clip}?loop=1&realtime=1", port, device_id=device_id
        )
        logs.append((home / "daemon.log").open("w"))
        command = [sys.executable, "-m", "edge", "--config", str(config)]
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT))
    sub = Subscriber(port, "smartbin/#")
    try:
        assert poll(lambda: set(serving(sub)) >= set(device_ids), 60), f"not every bin came up: {serving(sub)}"
        yield sub
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process, log in zip(processes, logs):
            process.wait(30)
            log.close()
        sub.client.disconnect()
