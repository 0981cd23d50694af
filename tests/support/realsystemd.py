"""A real systemd for the tests: PID 1 of a container booted from this machine's Debian, smartbin installed in it
by ``systemd/install.sh`` exactly as a user would (offline wheels via ``--find-links``, as on a bin with no
internet), with a bundle and a config pointing at the container's own mosquitto on loopback; and what the tests
read of it (a unit's state, its journal, the broker's messages).

One drop-in shortens the unit's timers (WatchdogSec 30 -> 5, RestartSec 5 -> 1) so the suite stays short;
everything else is the installed unit as it ships.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, board
from tests.support.container import Container, snapshot, unavailable

WHEELS = ROOT / ".cache" / "wheels"
EDGE = "smartbin-edge.service"
ACTUATOR = "smartbin-actuator.service"
DEVICE = "bin-01"
TOPIC = f"smartbin/{DEVICE}"
DROP_IN = """[Service]
WatchdogSec=5
RestartSec=1
"""


def booted(tmp_path_factory, bundle_dir: Path, clip_factory) -> Iterator[Container]:
    """A booted container with smartbin installed by install.sh and the edge unit active (skips where this
    machine cannot boot one): tests/system/conftest.py's ``machine``, one per module."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    if not (WHEELS / ".done").exists():
        pytest.skip(f"no offline wheels in {WHEELS}: `make wheels` fetches them (the README's `make test` does)")
    base = tmp_path_factory.mktemp("container")
    box = Container(base / "root", binds={WHEELS: "/wheels"})
    try:
        box.start()
    except RuntimeError as exc:
        box.stop()
        pytest.skip(f"this machine cannot boot systemd in a container: {exc}")
    try:
        shutil.copytree(
            ROOT,
            box.path("/root/src"),
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                ".cache",
                "*.egg-info",
                "build",
                "__pycache__",
                "demo-output",
                "test-artifacts",
                "soak-output",
            ),
        )
        box.copy_in(bundle_dir, "/root/bundle")
        clip, _ = clip_factory(items=4, seed=11)
        box.copy_in(clip, "/srv/smartbin/clip.avi")  # readable under ProtectSystem=strict and ProtectHome
        box.sh("systemctl start mosquitto.service")
        before = snapshot(box.root)

        config = board()
        config["device_id"] = DEVICE
        config["model"].update(variant="int8", threads=1)
        config["source"].update(uri="file:///srv/smartbin/clip.avi?loop=1&realtime=1", frozen_after_s=0, roi=None)
        config["mqtt"].update(host="127.0.0.1", metrics_interval_s=1)
        config["actuator"].update(mode="pins", hold_s=0.05)
        config["samples"] = {"confident_fraction": 1.0}  # every decision's frame, so the store shows at once
        write_config(box, config)  # an existing config is kept by the installer
        etc = box.path("/etc/smartbin")
        (etc / "environment").write_text("GPIOZERO_PIN_FACTORY=mock\n")  # no GPIO in a container
        drop_in = box.path(f"/etc/systemd/system/{EDGE}.d")
        drop_in.mkdir(parents=True)
        (drop_in / "timers.conf").write_text(DROP_IN)

        started = time.monotonic()
        install = box.sh(
            "/root/src/systemd/install.sh --board x86-dev --bundle /root/bundle --find-links /wheels 2>&1", check=False
        )
        assert install.returncode == 0, install.stdout
        print(f"install.sh in the container: {time.monotonic() - started:.0f} s")
        box.install_log = install.stdout
        box.config = config
        box.before_install = before
        yield box
    finally:
        box.stop()


def write_config(box: Container, config: dict) -> None:
    path = box.path("/etc/smartbin/config.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def show(box: Container, unit: str = EDGE) -> dict[str, str]:
    return box.unit(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "ExecMainStatus", "StatusText", "Result")


def wait_for(predicate, what: str, timeout: float = 60, every: float = 0.2, explain=None):
    """Poll until ``predicate()`` is truthy; fail naming ``what`` (and ``explain()``, what was seen instead).
    A bound on waiting, never a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


def unit_log(box: Container, unit: str = EDGE) -> str:
    """The unit's log since the container booted, messages only."""
    return box.sh(f"journalctl -u {unit} -b --no-pager -o cat").stdout


def messages(box: Container, topic: str, count: int, timeout: int = 60, extra: str = "") -> list[dict]:
    """``count`` JSON messages from the container's broker, read by mosquitto_sub inside it."""
    out = box.sh(f"mosquitto_sub -h 127.0.0.1 -t '{topic}' -C {count} -W {timeout} {extra}", check=False)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def restart(box: Container, *options: str, check: bool = True):
    """``systemctl restart``, after ``reset-failed``: the many restarts of this module, minutes apart at
    most, must not run into the unit's start limit (5 in 300 s), which is for a bin, not for a test."""
    box.sh(f"systemctl reset-failed {EDGE}", check=False)
    return box.sh(f"systemctl restart {' '.join(options)} {EDGE}", check=check)


def restart_and_wait(box: Container) -> dict[str, str]:
    restart(box)
    return wait_for(lambda: (s := show(box))["ActiveState"] == "active" and s, "the unit to be active again")
