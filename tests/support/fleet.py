"""A fleet for tests: several real daemons (each its own store, outbox and log) on one broker, each with a
looping clip as its camera."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT, poll, write_config
from tests.support.mqtt_client import Subscriber

SMARTBIN = Path(sys.executable).with_name("smartbin")
# short watches for tests: a stage watched 3 s and 20 frames a side, the canaries' shadow over 5 items
WATCH = ["--watch", "3", "--min-frames", "20", "--shadow-items", "5"]


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

    def config(self, device_id: str) -> Path:
        """The config file of ``device_id``'s daemon."""
        return Path(self.commands[device_id][0][-1])

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


def bundle_copy(source: Path, dest: Path, name: str, created: str) -> Path:
    """The bundle's int8 variant under another name and creation time (a bin refuses an older bundle)."""
    dest.mkdir(parents=True)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest.update(name=name, created=created, variants={"int8": manifest["variants"]["int8"]}, probes={})
    for file in ("int8.tflite", "acceptance.npz"):
        shutil.copy(source / file, dest / file)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def rollout(
    broker,
    tmp_path: Path,
    bundle: Path | None,
    *options: str,
    meanwhile=lambda: None,
    started: list | None = None,
    sigint_ignored: bool = False,
) -> tuple[int, dict, str]:
    """`smartbin fleet rollout` as a user runs it (``bundle`` None: none, as --undo runs); ``meanwhile()`` runs
    while it does (``started`` gets the process); ``sigint_ignored``: as a shell starts a background job (and
    a CI job its steps), SIGINT ignored from the start. (exit code, report, output)"""
    report = tmp_path / f"{bundle.name if bundle else 'none'}-report.json"
    command = [
        str(SMARTBIN),
        "fleet",
        "rollout",
        *([str(bundle)] if bundle else []),
        "--broker",
        f"127.0.0.1:{broker.port}",
    ]
    command += ["--serve", "127.0.0.1:0", "--json", str(report), *WATCH, *options]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore)
    if started is not None:
        started.append(process)
    try:
        meanwhile()
    finally:
        output, _ = process.communicate(timeout=600)
    return process.returncode, json.loads(report.read_text()) if report.exists() else {}, output


def wait_switched(sub: Subscriber, device_id: str, name: str) -> None:
    """Until the bin answers that it switched to the bundle called ``name``."""
    found = sub.wait_for(
        "command/result",
        timeout=300,
        where=lambda m: (
            m.topic.split("/")[1] == device_id
            and (m.json().get("result") or {}).get("stage") == "switched"
            and str(m.json()["result"].get("model")).startswith(name)
        ),
    )
    assert found, f"{device_id} never switched to {name}"


def updates_sent(sub: Subscriber, url_part: str) -> dict[str, float]:
    """When each bin was sent update_model for an archive, to switch to it (not to run it in the shadow), by
    arrival at this subscriber."""
    return {
        m.topic.split("/")[1]: m.at
        for m in sub.on("command")
        if m.json().get("action") == "update_model"
        and url_part in m.json().get("url", "")
        and not m.json().get("shadow")
    }


def shadows_sent(sub: Subscriber, url_part: str) -> set[str]:
    """The bins sent update_model for an archive to run it in the shadow."""
    return {
        m.topic.split("/")[1]
        for m in sub.on("command")
        if m.json().get("action") == "update_model" and url_part in m.json().get("url", "") and m.json().get("shadow")
    }
