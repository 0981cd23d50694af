"""Over-the-air model updates: real bundle archives served by a real HTTP server (Debian's busybox
httpd, with Range support), the daemon as a subprocess, a real broker.

What is checked: an update to a bundle with other labels switches, keeps classifying with the old
model while it downloads and tests, and persists across a restart; a wrong sha256, a truncated
download, a missing file, a downgrade and a bundle that fails its acceptance test are each refused
with the old model serving; a daemon killed inside the health window comes back on the old model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.formats.archive import pack
from edge.formats.bundle import sha256_file
from edge.models.store import ModelStore
from edge.tools.localbroker import free_port
from tests.support import ROOT, poll, write_config
from tests.support.mqtt_client import Subscriber, answered
from tests.support.updates import (
    OTHER_NAMES,
    TOPIC,
    config_for,
    labels_after,
    outcome,
    publish,
    slim_copy,
    start,
    start_and_update,
    stop,
)

pytestmark = pytest.mark.slow


def test_an_update_switches_serves_throughout_and_outlives_a_restart(tmp_path, v1, v2, web, broker, clip_factory):
    config, sub, process, digest = start_and_update(tmp_path, v1, v2, web, broker, clip_factory, window=1.0)
    try:
        done = outcome(sub, "up")
        assert done["ok"], done
        stages = [m.json()["result"]["stage"] for m in sub.on("command/result") if m.json().get("id") == "up"]
        assert stages == ["started", "downloading", "verifying", "testing", "switched"], stages
        assert done["result"]["model"] == f"other-model-{digest[:12]}"
        assert re.fullmatch(r"(\d+) of \1 reference images agree with the float model", done["result"]["acceptance"])
        # the old model kept classifying while the new one was fetched, unpacked, loaded and tested
        started = answered(sub, "up")["ts"]
        during = [m.json() for m in sub.on("classification") if started < m.json()["ts"] < done["ts"]]
        assert during and not {c["label"] for c in during} & OTHER_NAMES
        assert labels_after(sub, done["ts"]) <= OTHER_NAMES
        assert sub.wait_for("model", where=lambda m: m.json()["name"] == "other-model")
        late = Subscriber(broker.port, topic="smartbin/test-bin/model")  # a newcomer gets the retained topic
        model = late.wait_for("model")[-1]
        late.close()
        assert model.retain and model.json()["name"] == "other-model" and model.json()["sha256"] == digest
        assert model.json()["previous"] == str(v1.resolve())
        # the one-second health window passes: confirmed
        confirmed = sub.wait_for("model", where=lambda m: (m.json()["last_change"] or {}).get("event") == "confirmed")
        assert confirmed and not confirmed[-1].json()["health_window"]
        schema = json.loads((ROOT / "edge" / "schemas" / "model.json").read_text(encoding="utf-8"))
        for message in sub.on("model"):
            jsonschema.validate(message.json(), schema)
    finally:
        err = stop(process)
    assert process.returncode == 0, err[-2000:]
    state = json.loads((tmp_path / "models" / "state.json").read_text())
    assert state["current"] == f"other-model-{digest[:12]}" and (tmp_path / "models" / "current").is_symlink()

    sub.messages.clear()
    process = start(config)  # the config still names v1: the store's choice wins
    try:
        assert labels_after(sub, 0) <= OTHER_NAMES
        sub.publish(TOPIC, json.dumps({"id": "st", "action": "status"}))
        assert answered(sub, "st")["result"]["model"]["name"] == "other-model"
        # reload_model by path goes back, and that choice persists too
        sub.publish(TOPIC, json.dumps({"id": "back", "action": "reload_model", "bundle": str(v1)}))
        back = answered(sub, "back")
        assert back["ok"] and not labels_after(sub, back["ts"]) & OTHER_NAMES
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]
    assert json.loads((tmp_path / "models" / "state.json").read_text())["current"] == str(v1.resolve())


def test_bad_updates_are_refused_and_the_old_model_keeps_serving(tmp_path, v1, v2, web, broker, clip_factory):
    root, base = web
    url, digest = publish(web, v2, "v2.tar")
    data = (root / "v2.tar").read_bytes()
    (root / "truncated.tar").write_bytes(data[: len(data) // 2])
    # a bundle whose model no longer reproduces its reference predictions (another model's set)
    wrong = slim_copy(v2, tmp_path / "wrong", "2026-07-01T00:00:00+00:00")
    with np.load(wrong / "acceptance.npz") as reference:
        images, probs = reference["images"], reference["probs"]
    np.savez_compressed(wrong / "acceptance.npz", images=images, probs=np.roll(probs, 1, axis=1))
    manifest = json.loads((wrong / "manifest.json").read_text())
    reference = wrong / "acceptance.npz"
    manifest["acceptance"].update(sha256=sha256_file(reference), size=reference.stat().st_size)
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    wrong_url, wrong_digest = publish(web, wrong, "wrong.tar")
    old = slim_copy(v2, tmp_path / "old", "2025-01-01T00:00:00+00:00")
    old_url, old_digest = publish(web, old, "old.tar")
    cases = {
        "sha": (url, "0" * 64, "sha256 check failed"),
        "truncated": (f"{base}/truncated.tar", sha256_file(root / "truncated.tar"), "not a readable tar archive"),
        "missing": (f"{base}/nothing.tar", digest, "HTTP 404"),
        "acceptance": (wrong_url, wrong_digest, "acceptance test failed: 0 of"),
        "downgrade": (old_url, old_digest, "refused downgrade"),
    }
    clip, _ = clip_factory(items=4)
    sub = Subscriber(broker.port)
    process = start(config_for(tmp_path, v1, clip, broker.port, window=60))
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        assert not labels_after(sub, 0, 3) & OTHER_NAMES
        for command_id, (address, sha, expected) in cases.items():
            sub.publish(TOPIC, json.dumps({"id": command_id, "action": "update_model", "url": address, "sha256": sha}))
            result = outcome(sub, command_id)
            assert not result["ok"] and expected in result["error"], (command_id, result)
            assert "still serving the old model" in result["error"]
            assert not labels_after(sub, result["ts"], 3) & OTHER_NAMES
        # a malformed command is refused before anything starts
        bad = {"id": "bad", "action": "update_model", "url": "ftp://x/y.tar", "sha256": digest}
        sub.publish(TOPIC, json.dumps(bad))
        assert "http:// or https://" in answered(sub, "bad")["error"]
        sub.publish(TOPIC, json.dumps({"id": "nosha", "action": "update_model", "url": url}))
        assert "needs 'sha256' (or updates.public_key" in answered(sub, "nosha")["error"]
        # forced, the older bundle installs
        forced = {"id": "force", "action": "update_model", "url": old_url, "sha256": old_digest, "force": True}
        sub.publish(TOPIC, json.dumps(forced))
        assert outcome(sub, "force")["ok"]
        assert process.poll() is None
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]
    # nothing refused stayed in the store
    left = sorted(p.name for p in (tmp_path / "models").iterdir() if p.is_dir() and not p.is_symlink())
    assert left == [f"other-model-{old_digest[:12]}"], left
    assert not [p.name for p in (tmp_path / "models").glob(".*") if p.name != ".start-failures"]  # no partial file


def rolled_back(sub: Subscriber, digest: str) -> dict:
    """After a restart: the retained model topic names v1 again, says the update was rolled back, and v1's
    labels are what classifies. Returns the ``last_change``."""
    model = sub.wait_for("model", where=lambda m: m.json()["name"] != "other-model")
    assert model, [m.json() for m in sub.on("model")]
    change = model[-1].json()["last_change"]
    assert change["event"] == "rolled_back" and change["failed"] == f"other-model-{digest[:12]}", change
    assert not labels_after(sub, 0) & OTHER_NAMES
    return change


def test_a_daemon_killed_inside_the_health_window_comes_back_on_the_old_model(
    tmp_path, v1, v2, web, broker, clip_factory
):
    config, sub, process, digest = start_and_update(tmp_path, v1, v2, web, broker, clip_factory, window=600)
    try:
        done = outcome(sub, "up")
        assert done["ok"] and labels_after(sub, done["ts"]) <= OTHER_NAMES
    finally:
        stop(process, signal.SIGKILL)  # the new model's first minutes: the process dies
    sub.messages.clear()
    process = start(config)
    try:
        assert "health window" in rolled_back(sub, digest)["reason"]
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


def test_a_device_with_a_public_key_installs_only_bundles_signed_by_it(tmp_path, v1, v2, web, broker, clip_factory):
    from edge.formats.signing import generate_key

    root, base = web
    public = generate_key(tmp_path / "fleet.pem")
    generate_key(tmp_path / "other.pem")
    pack(v2, root / "signed.tar", key=tmp_path / "fleet.pem")
    unsigned = pack(v2, root / "unsigned.tar")
    pack(v2, root / "forged.tar", key=tmp_path / "other.pem")
    clip, _ = clip_factory(items=4)
    uri = f"file://{clip}?loop=1&realtime=1"
    config = write_config(tmp_path / "config.yaml", v1, uri, broker.port, updates__public_key=public)
    sub = Subscriber(broker.port)
    process = start(config)
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        cases = {
            "forged": ("forged.tar", "signature check failed"),
            "unsigned": ("unsigned.tar", "not signed"),
        }
        for command_id, (name, expected) in cases.items():
            # a correct sha256 does not make up for a missing or wrong signature
            command = {"id": command_id, "action": "update_model", "url": f"{base}/{name}"}
            if name == "unsigned":
                command["sha256"] = unsigned
            sub.publish(TOPIC, json.dumps(command))
            result = outcome(sub, command_id)
            assert not result["ok"] and expected in result["error"], result
            assert not labels_after(sub, result["ts"], 3) & OTHER_NAMES
        # a folder on the device's disk is no way around the key
        sub.publish(TOPIC, json.dumps({"id": "by-path", "action": "reload_model", "bundle": str(v2)}))
        by_path = answered(sub, "by-path")
        assert not by_path["ok"] and "not signed" in by_path["error"], by_path
        assert not labels_after(sub, by_path["ts"], 3) & OTHER_NAMES
        sub.publish(TOPIC, json.dumps({"id": "signed", "action": "update_model", "url": f"{base}/signed.tar"}))
        signed = outcome(sub, "signed")
        assert signed["ok"] and labels_after(sub, signed["ts"]) <= OTHER_NAMES, signed
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


# ---------------------------------------------------------------- the parts, without a daemon
def test_a_stored_model_that_fails_at_start_falls_back_to_the_one_before(tmp_path, v1, v2, web, broker, clip_factory):
    """The store's current model is damaged on disk (a bad SD card sector): the daemon starts on the
    previous one, says so on the retained model topic, and keeps that choice."""
    config, sub, process, digest = start_and_update(tmp_path, v1, v2, web, broker, clip_factory, window=0.5)
    try:
        assert outcome(sub, "up")["ok"]
        assert sub.wait_for("model", where=lambda m: (m.json()["last_change"] or {}).get("event") == "confirmed")
    finally:
        err = stop(process)
    assert process.returncode == 0, err[-2000:]
    model_file = tmp_path / "models" / f"other-model-{digest[:12]}" / "int8.tflite"
    model_file.write_bytes(b"\0" * model_file.stat().st_size)
    sub.messages.clear()
    process = start(config)
    try:
        reason = rolled_back(sub, digest)["reason"]
        assert "failed to load at start" in reason and "sha256 check failed" in reason
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]
    assert json.loads((tmp_path / "models" / "state.json").read_text())["current"] == str(v1.resolve())


def test_no_model_at_start_waits_longer_each_time_then_exits_for_a_restart(tmp_path):
    """Under a service manager (a notify socket, as systemd gives): no model loads -> STATUS says why and
    when it restarts, EXTEND_TIMEOUT_USEC holds the start timeout off, SIGTERM ends the wait, exit 75.
    The wait doubles with each failed start in a row."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    config = write_config(tmp_path / "config.yaml", tmp_path / "no-bundle", "synthetic://", free_port())
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    waits = []
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        message = ""
        while "STATUS=failed" not in message:
            message = notify.recv(4096).decode()
        assert "EXTEND_TIMEOUT_USEC=" in message and "bundle folder not found" in message, message
        waits.append(int(re.search(r"restarting in (\d+) s", message).group(1)))
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 75, err[-2000:]
        assert "Traceback" not in err
    notify.close()
    assert waits == [30, 60], waits


def test_a_bundle_installed_by_hand_becomes_the_stores_choice(tmp_path, other_bundle_dir):
    """install.sh --bundle runs `smartbin bundle install`: the store records it, so an earlier update's
    model cannot keep serving in its place, and the one before stays to fall back on."""
    from edge.cli import main

    first = slim_copy(other_bundle_dir, tmp_path / "first", "2026-01-01T00:00:00+00:00")
    second = slim_copy(other_bundle_dir, tmp_path / "second", "2026-02-01T00:00:00+00:00")
    store_dir = tmp_path / "models"
    store = ModelStore(store_dir, 3)
    assert main(["bundle", "install", str(first), "--store", str(store_dir)]) == 0
    assert store.state().current == "first" and os.readlink(store_dir / "current") == "first"
    assert main(["bundle", "install", str(second), "--store", str(store_dir)]) == 0
    state = store.state()
    assert (state.current, state.previous) == ("second", "first")
    assert store.start_candidates(tmp_path / "configured")[:2] == [store_dir / "second", store_dir / "first"]
    broken = shutil.copytree(first, tmp_path / "broken")
    (broken / "int8.tflite").write_bytes(b"not a model")
    assert main(["bundle", "install", str(broken), "--store", str(store_dir)]) == 2
    assert store.state().current == "second" and not (store_dir / "broken").exists()


def test_leftovers_of_an_update_are_removed_at_start(tmp_path, v1, broker, clip_factory):
    """A download or an unpack cut short by a power cut (nothing resumes them) is removed at the next start."""
    clip, _ = clip_factory(items=4)
    config = config_for(tmp_path, v1, clip, broker.port, window=60)
    store = tmp_path / "models"
    (store / ".unpack-0123456789ab").mkdir(parents=True)
    (store / ".unpack-0123456789ab" / "int8.tflite").write_bytes(b"half a model")
    (store / ".download-0123456789ab.tar").write_bytes(b"half an archive")
    (store / ".download-0123456789ab.tar.validator").write_text('"etag"')
    (store / ".install-r2").mkdir()  # `smartbin bundle install` cut short
    (store / ".install-r2" / "manifest.json").write_text("{")
    sub = Subscriber(broker.port)
    process = start(config)
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        assert sorted(p.name for p in store.glob(".*")) == []
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


@pytest.mark.parametrize("length", ["Content-Length", "none"])
def test_an_update_that_does_not_fit_is_refused_before_it_fills_the_card(
    tmp_path, v1, v2, web, broker, clip_factory, length
):
    """The model store on a small filesystem of its own (a tmpfs in the daemon's mount namespace, as a small
    card partition): an archive that would not fit with its unpacked copy is refused before a byte is
    written (before the card fills, when the server sends no Content-Length), with the sizes on MQTT, nothing
    is left behind, and the old model keeps serving."""
    url, digest = publish(web, v2, "v2.tar")
    archive = web[0] / "v2.tar"
    if length == "none":
        url = f"http://127.0.0.1:{without_length(archive)}/v2.tar"
    clip, _ = clip_factory(items=4)
    config = config_for(tmp_path, v1, clip, broker.port, window=60)
    store = tmp_path / "models"
    store.mkdir()
    size_k = archive.stat().st_size * 3 // 2 // 1024 + 1  # the archive fits, it and its bundle do not
    mount = f"mount -t tmpfs -o size={size_k}k smartbin-store {store}"
    command = f"{mount} && exec {sys.executable} -m edge --config {config}"
    sub = Subscriber(broker.port)
    process = subprocess.Popen(["unshare", "-rm", "sh", "-c", command], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        sub.publish(TOPIC, json.dumps({"id": "big", "action": "update_model", "url": url, "sha256": digest}))
        result = outcome(sub, "big")
        said = "to download and as many to unpack, only" if length != "none" else "(no Content-Length) and as many"
        assert not result["ok"] and said in result["error"], result
        assert not labels_after(sub, result["ts"], 3) & OTHER_NAMES
        inside = Path(f"/proc/{process.pid}/root{store}")  # the store as the daemon sees it: its tmpfs
        assert os.statvfs(inside).f_blocks * os.statvfs(inside).f_frsize < size_k * 1024 + 4096  # the tmpfs
        assert [p.name for p in inside.iterdir() if p.name.startswith(".")] == []
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


def test_a_reload_applies_updates_and_samples_without_a_restart(tmp_path, v1, v2, web, broker, clip_factory):
    """SIGHUP with updates.public_key added: an unsigned bundle is refused from then on (it was accepted until
    the next restart); samples.enabled false (a privacy request): no frame is kept from then on."""
    import yaml

    from edge.formats.signing import generate_key

    url, digest = publish(web, v2, "v2.tar")
    public = generate_key(tmp_path / "fleet.pem")
    clip, _ = clip_factory(items=4)
    config = config_for(tmp_path, v1, clip, broker.port, window=60)
    data = yaml.safe_load(config.read_text())
    data["samples"]["confident_fraction"] = 1.0  # every decision's frame is kept
    config.write_text(yaml.safe_dump(data))
    samples = lambda: sorted((tmp_path / "samples").rglob("*.jpg"))  # noqa: E731
    sub = Subscriber(broker.port)
    process = start(config)
    try:
        assert sub.wait_for("decision", count=2, timeout=60), "no decisions"
        assert poll(samples, 30), "the control: frames are kept before the reload"
        statuses = len(sub.on("status"))
        data["updates"]["public_key"] = public
        data["samples"]["enabled"] = False
        config.write_text(yaml.safe_dump(data))
        process.send_signal(signal.SIGHUP)
        assert sub.wait_for("status", count=statuses + 1), "no status after the reload"
        kept, since = samples(), time.time()
        assert len(sub.wait_for("decision", count=3, timeout=60, where=lambda m: m.json()["ts"] > since)) >= 3
        assert samples() == kept
        sub.publish(TOPIC, json.dumps({"id": "unsigned", "action": "update_model", "url": url, "sha256": digest}))
        result = outcome(sub, "unsigned")
        assert not result["ok"] and "not signed" in result["error"], result
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


def without_length(archive: Path) -> int:
    """A server that streams ``archive`` with no Content-Length (HTTP/1.0, the end of the body is the close), as
    some proxies and dynamic servers do; its port."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Stream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            with archive.open("rb") as fh:
                while chunk := fh.read(1 << 15):
                    self.wfile.write(chunk)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port
