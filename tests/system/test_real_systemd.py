"""The units under a real systemd: PID 1 of a container booted from this machine's Debian.

smartbin is installed with ``systemd/install.sh`` exactly as a user would (offline wheels via
``--find-links``, as on a bin with no internet), with a bundle and a config pointing at the
container's own mosquitto on loopback. Then, for real: READY=1, the watchdog, SIGKILL and the
outbox, exit 78, ``systemctl reload``, both engines under the hardened unit, an engine build longer than
the start timeout, an over-the-air update with samples and counters in the unit's state directory, a
damaged current model at start, the journal, the actuator unit with
gpiozero's mock pins, and ``--uninstall --purge``.

The container and its helpers: tests/support/realsystemd.py (``machine``: tests/system/conftest.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.container import Container, snapshot
from tests.support.fakes import fakes_path
from tests.support.realsystemd import (
    ACTUATOR,
    DEVICE,
    EDGE,
    TOPIC,
    messages,
    restart,
    restart_and_wait,
    show,
    unit_log,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.real_systemd


def outbox_rows(box: Container) -> list[str]:
    """event_ids waiting in the daemon's outbox (read from the host: the container's root is a folder here)."""
    path = box.path("/var/lib/smartbin/outbox.sqlite")
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_installer_enables_the_unit_and_it_becomes_active_only_on_ready(machine: Container):
    assert "groups: video" in machine.install_log  # gpio and render do not exist here: left out of the unit
    assert machine.sh(f"systemctl is-enabled {EDGE}").stdout.strip() == "enabled"
    machine.sh(f"systemctl stop {EDGE}")
    machine.sh(f"systemctl start --no-block {EDGE}")
    states = []
    wait_for(lambda: states.append(show(machine)) or states[-1]["ActiveState"] == "active", "active", every=0.02)
    # Type=notify: systemd holds the unit in "activating" until the daemon's READY=1, sent after its first
    # real capture -> infer -> decide cycle (Python, the model and the camera take far longer than one poll).
    seen = [s["ActiveState"] for s in states if s["ActiveState"] != "inactive"]  # the job may not have begun
    assert seen[0] == "activating", states
    status = states[-1]["StatusText"]
    assert "int8 on litert" in status, status  # STATUS= from the daemon, over the notify socket
    journal = unit_log(machine)
    assert "ready: int8 on litert" in journal, journal[-2000:]
    assert "smartbin " in journal and "pid " in journal  # the daemon's own lines reach the journal
    # The hardening leaves what the runtime needs: XNNPACK reads /proc/cpuinfo (ProcSubset=pid hid it).
    assert "delegate=xnnpack" in journal and "cpuinfo" not in journal, journal[-2000:]
    assert "mode is different" not in journal, journal[-2000:]  # the installer gives /etc/smartbin the unit's 0750
    # Decisions reach the container's broker, from the service user, under the hardened unit.
    decisions = messages(machine, f"{TOPIC}/decision", 2)
    assert len(decisions) == 2 and all(d["device_id"] == DEVICE for d in decisions)
    assert machine.sh(f"ps -o user= -p {show(machine)['MainPID']}").stdout.strip() == "smartbin"
    # the versions pinned for this machine (constraints/refresh.sh) are the ones the installer put in the venv
    pinned = dict(
        line.lower().split("==")
        for line in (ROOT / "constraints" / f"{platform.machine()}.txt").read_text().splitlines()
        if "==" in line
    )
    frozen = machine.sh("/opt/smartbin/venv/bin/pip freeze --exclude smartbin").stdout.lower().splitlines()
    installed = dict(line.split("==") for line in frozen if "==" in line)
    assert {"numpy", "opencv-python-headless", "ai-edge-litert"} <= set(installed)
    assert {name: version for name, version in installed.items() if name in pinned} == {
        name: pinned[name] for name in installed if name in pinned
    }


def test_watchdog_restarts_a_hung_loop(machine: Container):
    before = show(machine)
    machine.sh(f"kill -STOP {before['MainPID']}")  # the loop hangs: no more WATCHDOG=1
    after = wait_for(
        lambda: (s := show(machine))["ActiveState"] == "active" and s["MainPID"] != before["MainPID"] and s,
        "a restart after the watchdog fired",
    )
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    journal = unit_log(machine)
    assert "Watchdog timeout" in journal, journal[-2000:]
    assert messages(machine, f"{TOPIC}/decision", 1)  # serving again


def test_sigkill_restarts_and_the_outbox_backlog_is_delivered(machine: Container):
    # A persistent QoS 1 session, so the broker keeps what arrives for it while we are not reading.
    session = "-c -i systemd-test -q 1"
    assert messages(machine, f"{TOPIC}/decision", 1, extra=session)
    machine.sh("systemctl stop mosquitto.service")  # the broker goes away: decisions queue in the outbox
    backlog = wait_for(lambda: (rows := outbox_rows(machine)) and len(rows) >= 3 and rows, "an outbox backlog")
    before = show(machine)
    machine.sh(f"systemctl kill --signal=SIGKILL {EDGE}")
    after = wait_for(
        lambda: (s := show(machine))["ActiveState"] == "active" and s["MainPID"] != before["MainPID"] and s,
        "a restart after SIGKILL",
    )
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert set(backlog) <= set(outbox_rows(machine))  # the killed process lost nothing it had queued
    machine.sh("systemctl start mosquitto.service")
    wait_for(lambda: not set(backlog) & set(outbox_rows(machine)), "the backlog to be sent")
    received = messages(machine, f"{TOPIC}/decision", len(backlog) + 50, timeout=5, extra=session)
    assert set(backlog) <= {m["event_id"] for m in received}


def test_a_lost_camera_is_reported_without_a_restart_loop(machine: Container):
    """The camera goes away for longer than the watchdog (5 s here) and comes back; then the unit starts
    with no camera at all. The unit stays up on the same process, says camera_lost on the retained
    status, and is sorting again once the camera is back, without a restart."""
    clip, away = machine.path("/srv/smartbin/clip.avi"), machine.path("/srv/smartbin/away.avi")
    health = lambda: messages(machine, f"{TOPIC}/status", 1)[0]["health"]  # noqa: E731 - the retained one
    write_config(machine, {**machine.config, "source": {**machine.config["source"], "stall_timeout_s": 3}})
    try:
        before = restart_and_wait(machine)
        clip.rename(away)
        wait_for(lambda: health() == "camera_lost", "camera_lost on the retained status")
        time.sleep(12)  # more than two watchdog periods without a frame
        during = show(machine)
        assert (during["MainPID"], during["NRestarts"], during["ActiveState"]) == (
            before["MainPID"],
            before["NRestarts"],
            "active",
        ), during
        away.rename(clip)
        wait_for(lambda: health() == "ok", "ok again once the camera is back")
        assert messages(machine, f"{TOPIC}/decision", 1) and show(machine)["MainPID"] == before["MainPID"]
        # no camera at boot: READY after stall_timeout_s all the same, instead of a start timeout
        clip.rename(away)
        booted = restart_and_wait(machine)
        assert health() == "camera_lost" and "camera" in booted["StatusText"], booted
        away.rename(clip)
        wait_for(lambda: health() == "ok", "ok once the camera appears")
        assert show(machine)["MainPID"] == booted["MainPID"]
    finally:
        if away.exists():
            away.rename(clip)
        write_config(machine, machine.config)
    restart_and_wait(machine)


def test_a_config_error_exits_78_and_is_not_restarted(machine: Container):
    bad = {**machine.config, "decision": {**machine.config["decision"], "min_confidense": 0.5}}
    write_config(machine, bad)
    try:
        assert restart(machine, check=False).returncode != 0
        time.sleep(3)  # three RestartSec: a restart loop would have begun
        state = show(machine)
        assert state["ExecMainStatus"] == "78" and state["ActiveState"] == "failed", state
        assert state["NRestarts"] == "0", state  # a manual restart zeroes it; any automatic one counts
        journal = unit_log(machine)
        assert "min_confidense" in journal and "/etc/smartbin/config.yaml" in journal, journal[-2000:]
    finally:
        write_config(machine, machine.config)
        machine.sh(f"systemctl reset-failed {EDGE}")
    restart_and_wait(machine)


def test_systemctl_reload_applies_a_change_without_a_restart(machine: Container):
    before = show(machine)
    write_config(machine, {**machine.config, "decision": {**machine.config["decision"], "min_confidence": 1.0}})
    try:
        machine.sh(f"systemctl reload {EDGE}")
        journal = wait_for(
            lambda: "reloaded" in (j := unit_log(machine)) and j,
            "the reload in the journal",
        )
        assert "reloaded from /etc/smartbin/config.yaml: decision" in journal, journal[-2000:]
        decisions = messages(machine, f"{TOPIC}/decision", 3)
        assert decisions and all(d["reason"] == "low_confidence" for d in decisions), decisions
        after = show(machine)
        assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == before["NRestarts"]
    finally:
        write_config(machine, machine.config)
        machine.sh(f"systemctl reload {EDGE}")


def test_the_hardened_unit_runs_the_onnx_engine_too(machine: Container):
    """A config switched to an ONNX variant: install.sh run again adds ONNX Runtime, which [edge] leaves out."""
    venv_python = "/opt/smartbin/venv/bin/python"
    assert machine.sh(f"{venv_python} -c 'import onnxruntime'", check=False).returncode != 0  # the control
    onnx = {**machine.config, "model": {**machine.config["model"], "variant": "onnx_int8"}}
    write_config(machine, onnx)
    try:
        machine.sh("/root/src/systemd/install.sh --board x86-dev --find-links /wheels")
        assert machine.sh(f"{venv_python} -c 'import onnxruntime'", check=False).returncode == 0
        state = restart_and_wait(machine)
        assert "onnx_int8 on onnxruntime" in state["StatusText"], state
        status = messages(machine, f"{TOPIC}/status", 1)[0]
        assert status["backend"] == "onnxruntime" and status["state"] == "online", status
        assert messages(machine, f"{TOPIC}/decision", 2)
    finally:
        write_config(machine, machine.config)
    restart_and_wait(machine)


def test_a_jetsons_drop_in_keeps_the_argus_socket_in_reach(machine: Container):
    """libargus (csi://0 on a Jetson) reaches nvargus-daemon through /tmp/argus_socket. Seen from the running
    daemon's own mount namespace: the hardened unit's private /tmp hides it (the control), the drop-in that
    install.sh adds on a Jetson shows it."""
    machine.sh("python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"/tmp/argus_socket\")'")
    seen = lambda: machine.sh(f"nsenter -t {show(machine)['MainPID']} -m test -S /tmp/argus_socket", check=False)  # noqa: E731
    assert seen().returncode != 0
    drop_in = machine.path(f"/etc/systemd/system/{EDGE}.d/10-jetson-camera.conf")
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "systemd" / "jetson-camera.conf", drop_in)
    try:
        machine.sh("systemctl daemon-reload")
        restart_and_wait(machine)
        assert seen().returncode == 0
    finally:
        drop_in.unlink()
        machine.sh("systemctl daemon-reload")
    restart_and_wait(machine)


SLOW_ENGINE = """[Service]
TimeoutStartSec=8
Environment=PYTHONPATH=/srv/fakes SMARTBIN_FAKE_TENSORRT_BUILD_S=20
"""


def test_an_engine_build_longer_than_the_start_timeout_completes_and_is_cached(machine: Container):
    """A Jetson's first start: a TensorRT build (faked at ONNX Runtime's provider, 20 s) against a start
    timeout of 8 s. The daemon extends the timeout while it builds, the unit becomes active, the engine is
    cached; a build killed half-way leaves no engine, and the restart builds a whole one."""
    machine.sh("/opt/smartbin/venv/bin/pip install --quiet --no-index --find-links /wheels onnxruntime")
    fakes_path(machine.path("/srv/fakes"))
    drop_in = machine.path(f"/etc/systemd/system/{EDGE}.d/slow-engine.conf")
    drop_in.write_text(SLOW_ENGINE)
    machine.sh("systemctl daemon-reload")
    write_config(machine, {**machine.config, "model": {**machine.config["model"], "variant": "onnx"}})
    models = machine.path("/var/lib/smartbin/models/current")
    cache = models / "trt_cache"
    partial = lambda: list(models.glob("trt_cache.partial-*"))  # noqa: E731
    try:
        shutil.rmtree(cache, ignore_errors=True)
        before = show(machine)
        state = restart_and_wait(machine)
        assert state["NRestarts"] == before["NRestarts"], state  # no start timeout, no restart
        assert "onnx on onnxruntime" in state["StatusText"], state
        assert messages(machine, f"{TOPIC}/status", 1)[0]["delegate"] == "TensorrtExecutionProvider"
        assert (cache / "model.engine").is_file() and not partial()
        built = (cache / "model.engine").stat().st_mtime_ns
        restart_and_wait(machine)  # the next start finds the engine: nothing is rebuilt
        assert (cache / "model.engine").stat().st_mtime_ns == built
        # killed half-way through a build: no engine appears; the automatic restart builds a whole one
        shutil.rmtree(cache)
        restart(machine, "--no-block")
        wait_for(partial, "a build to begin")
        killed = show(machine)
        machine.sh(f"systemctl kill --signal=SIGKILL {EDGE}")
        wait_for(lambda: show(machine)["MainPID"] not in ("0", killed["MainPID"]), "the automatic restart")
        assert not cache.exists()
        after = wait_for(lambda: (s := show(machine))["ActiveState"] == "active" and s, "active again", 120)
        assert int(after["NRestarts"]) == int(killed["NRestarts"]) + 1, after
        assert (cache / "model.engine").is_file() and not partial()
    finally:
        drop_in.unlink()
        machine.sh("systemctl daemon-reload")
        write_config(machine, machine.config)
    restart_and_wait(machine)


def test_the_hardened_unit_updates_over_http_and_keeps_samples_and_counts(
    machine: Container, bundle_dir: Path, tmp_path: Path
):
    """Under the unit's sandbox: a download from busybox's httpd, the model store, samples and counters in
    /var/lib/smartbin (StateDirectory), all written by the smartbin user."""
    from edge.formats.archive import pack

    r2 = tmp_path / "r2"
    r2.mkdir()
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(name="r2", created="2099-01-01T00:00:00+00:00", probes={})
    manifest["variants"] = {"int8": manifest["variants"]["int8"]}
    for name in ("int8.tflite", "acceptance.npz"):
        shutil.copy(bundle_dir / name, r2 / name)
    (r2 / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    machine.path("/srv/www").mkdir(parents=True, exist_ok=True)
    digest = pack(r2, machine.path("/srv/www/r2.tar"))
    machine.sh("busybox httpd -p 127.0.0.1:8088 -h /srv/www")
    results = machine.path("/srv/results.txt")
    try:
        # every stream redirected: a background process holding sh's pipes would keep machine.sh waiting
        subscribe = f"mosquitto_sub -h 127.0.0.1 -t '{TOPIC}/command/result' -C 5 -W 180"
        machine.sh(f"({subscribe} > /srv/results.txt 2>/dev/null </dev/null &)")
        time.sleep(1)  # the subscriber's connection, before the command it must see answered
        url = "http://127.0.0.1:8088/r2.tar"
        command = json.dumps({"id": "ota", "action": "update_model", "url": url, "sha256": digest})
        machine.sh(f"mosquitto_pub -h 127.0.0.1 -q 1 -t '{TOPIC}/command' -m '{command}'")
        answered = lambda: results.read_text() if results.exists() else ""  # noqa: E731
        seen = lambda: f"answers: {answered()}\njournal: {unit_log(machine)[-4000:]}"  # noqa: E731
        wait_for(lambda: len(answered().splitlines()) >= 5, "five answers", 180, explain=seen)
        answers = [json.loads(line) for line in answered().splitlines()]
        assert answers[-1]["ok"] and answers[-1]["result"]["stage"] == "switched", answers
        model = messages(machine, f"{TOPIC}/model", 1)[0]
        assert model["name"] == "r2" and model["sha256"] == digest, model
        uid = int(machine.sh("id -u smartbin").stdout)
        store = machine.path("/var/lib/smartbin/models")
        assert (store / "current").is_symlink() and (store / f"r2-{digest[:12]}").stat().st_uid == uid
        samples = wait_for(lambda: list(machine.path("/var/lib/smartbin/samples").glob("*.json")), "a sample")
        assert samples[0].stat().st_uid == uid and samples[0].with_suffix(".jpg").is_file()
        assert machine.path("/var/lib/smartbin/counters.sqlite").stat().st_uid == uid
        # install.sh put the bundle in the same store (models/bundle, models/current): back to it by name
        back = json.dumps({"id": "back", "action": "reload_model", "bundle": "bundle"})
        machine.sh(f"mosquitto_pub -h 127.0.0.1 -q 1 -t '{TOPIC}/command' -m '{back}'")
        wait_for(lambda: messages(machine, f"{TOPIC}/model", 1)[0]["folder"] == "bundle", "the installed model")
        assert os.readlink(store / "current") == "bundle"
        state = restart_and_wait(machine)  # and it is what starts
        assert messages(machine, f"{TOPIC}/model", 1)[0]["folder"] == "bundle", state
        # forward to r2 again; then its model file is damaged on disk: the next start runs the one before
        forward = json.dumps({"id": "fwd", "action": "reload_model", "bundle": f"r2-{digest[:12]}"})
        machine.sh(f"mosquitto_pub -h 127.0.0.1 -q 1 -t '{TOPIC}/command' -m '{forward}'")
        wait_for(lambda: messages(machine, f"{TOPIC}/model", 1)[0]["name"] == "r2", "r2 again")
        damaged = store / f"r2-{digest[:12]}" / "int8.tflite"
        damaged.write_bytes(b"\0" * damaged.stat().st_size)
        restarted = restart_and_wait(machine)
        # READY comes before the new start's …/model: until then the retained one is the last start's
        wait_for(lambda: messages(machine, f"{TOPIC}/model", 1)[0]["folder"] == "bundle", "the rollback's model")
        model = messages(machine, f"{TOPIC}/model", 1)[0]
        assert model["folder"] == "bundle" and model["last_change"]["event"] == "rolled_back", model
        assert "failed to load at start" in model["last_change"]["reason"], model
        assert os.readlink(store / "current") == "bundle"
        assert messages(machine, f"{TOPIC}/decision", 2)
        assert show(machine)["NRestarts"] == restarted["NRestarts"]  # active on the old model, no restart loop
    finally:
        machine.sh("pkill -f 'busybox httpd'", check=False)


def test_the_actuator_unit_moves_mock_pins_on_decisions(machine: Container):
    machine.sh("/opt/smartbin/venv/bin/pip install --quiet --no-index --find-links /wheels gpiozero")
    machine.sh(f"systemctl start {ACTUATOR}")
    acks = messages(machine, f"{TOPIC}/actuator/ack", 2)
    assert len(acks) == 2 and all(a["ok"] and not a["duplicate"] and a["bin"] for a in acks), acks
    journal = unit_log(machine, ACTUATOR)
    assert f"moving to {acks[0]['bin']}" in journal, journal[-2000:]
    assert show(machine, ACTUATOR)["ActiveState"] == "active"
    before = show(machine, ACTUATOR)
    machine.sh(f"systemctl reload {ACTUATOR}")  # SIGHUP: the config read again, the same process
    more = messages(machine, f"{TOPIC}/actuator/ack", 2)
    assert more and all(a["ok"] for a in more), more
    state = show(machine, ACTUATOR)
    assert state["ActiveState"] == "active" and (state["MainPID"], state["NRestarts"]) == (
        before["MainPID"],
        before["NRestarts"],
    ), (before, state)
    machine.sh(f"systemctl stop {ACTUATOR}")


def test_uninstall_purge_leaves_nothing_behind(machine: Container):
    out = machine.sh("/root/src/systemd/install.sh --uninstall --purge 2>&1").stdout
    units = machine.sh(f"systemctl list-unit-files {EDGE} {ACTUATOR} --no-legend", check=False).stdout
    assert units.strip() == "", out + units
    assert machine.sh("id smartbin", check=False).returncode != 0
    after = snapshot(machine.root)
    added = sorted(set(after) - set(machine.before_install))
    changed = sorted(k for k in after if k in machine.before_install and after[k] != machine.before_install[k])
    removed = sorted(set(machine.before_install) - set(after))
    assert not added and not changed and not removed, (added, changed, removed)
