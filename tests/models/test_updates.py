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
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.errors import BundleError
from edge.formats.archive import pack, unpack
from edge.formats.bundle import Bundle, sha256_file
from edge.models.store import ModelStore
from edge.models.update import UpdateError, download
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
def interrupted_download(url: str, partial: Path, keep: int) -> None:
    """What an attempt cut off after ``keep`` bytes leaves: the bytes and the response's validator."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        partial.write_bytes(resp.read(keep))
        partial.with_name(partial.name + ".validator").write_text(resp.headers["ETag"] or resp.headers["Last-Modified"])


def test_download_resumes_a_partial_file_and_respects_the_size_cap(tmp_path, web):
    root, base = web
    rng = np.random.default_rng(0)
    payload = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(payload)
    partial = tmp_path / "blob.part"
    interrupted_download(f"{base}/blob.bin", partial, 120_000)
    # the resumed request asks for the rest only: the server's log would show it; here, the bytes that
    # come back are the rest (a server ignoring Range sends the whole file, which is also handled)
    download(f"{base}/blob.bin", partial, max_bytes=1_000_000, timeout_s=10, attempts=1)
    assert partial.read_bytes() == payload
    # the file is replaced on the server between two attempts: the download starts over, never splices
    interrupted_download(f"{base}/blob.bin", partial, 120_000)
    replaced = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(replaced)
    os.utime(root / "blob.bin", (time.time() + 5, time.time() + 5))  # a new modification time, as a new upload
    download(f"{base}/blob.bin", partial, max_bytes=1_000_000, timeout_s=10, attempts=1)
    assert partial.read_bytes() == replaced
    with pytest.raises(UpdateError, match="max_bytes"):
        download(f"{base}/blob.bin", tmp_path / "capped", max_bytes=100_000, timeout_s=10, attempts=1)


def test_download_retries_back_off(tmp_path):
    """Each retry waits twice as long as the one before (seen from the server: when the attempts arrive)."""
    server = socket.create_server(("127.0.0.1", 0))
    arrivals: list[float] = []

    def refuse():
        while len(arrivals) < 3:
            conn, _ = server.accept()
            arrivals.append(time.monotonic())
            conn.close()  # no HTTP answer: a failed attempt

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x.tar"
    with pytest.raises(UpdateError, match="download failed after 3 attempt"):
        download(url, tmp_path / "none", max_bytes=10, timeout_s=5, attempts=3, backoff_s=0.3)
    thread.join(5)
    server.close()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(gaps) == 2 and gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # lower bounds: sleeps, not speed


def test_an_archive_is_manifest_first_and_unpacks_only_plain_files(tmp_path, v2):
    import tarfile

    archive = tmp_path / "v2.tar"
    digest = pack(v2, archive)
    time.sleep(1.1)  # a second later, on another workstation: the same bundle packs to the same bytes
    assert pack(v2, tmp_path / "again.tar") == digest
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json" and set(tar.getnames()) == {
            "manifest.json",
            "int8.tflite",
            "acceptance.npz",
        }
    assert Bundle.open(unpack(archive, tmp_path / "out", max_bytes=10**9).path).manifest.name == "other-model"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(v2 / "manifest.json", arcname="manifest.json")
        tar.add(v2 / "int8.tflite", arcname="../escape.tflite")
    with pytest.raises(BundleError, match="only plain files"):
        unpack(evil, tmp_path / "evil", max_bytes=10**9)
    assert not (tmp_path / "escape.tflite").exists()
    with pytest.raises(BundleError, match="more than the limit"):
        unpack(archive, tmp_path / "small", max_bytes=1000)


def test_the_store_keeps_the_newest_models_and_never_the_serving_ones(tmp_path):
    store = ModelStore(tmp_path / "models", keep=3)
    folders = []
    for i in range(6):
        folder = store.root / f"m{i}"
        folder.mkdir(parents=True)
        folders.append(folder)
        time.sleep(0.01)  # distinct modification times order them
    store.switch(folders[0], folders[1], None, 0)  # the oldest two serve / served
    store.confirm()
    left = sorted(p.name for p in store.root.iterdir() if p.is_dir() and not p.is_symlink())
    assert left == ["m0", "m1", "m5"], left


def test_a_clean_stop_in_the_health_window_reopens_it_and_a_crash_rolls_back(tmp_path):
    store = ModelStore(tmp_path / "models", keep=3)
    old, new = store.root / "old", store.root / "new"
    old.mkdir(parents=True)
    new.mkdir()
    store.switch(new, old, "ab" * 32, window_s=60)
    store.interrupted()  # SIGTERM inside the window
    reopened = store.recover(window_s=60)
    assert reopened.current == "new" and reopened.trial_until > time.time() and store.current() == new
    back = store.recover(window_s=60)  # this time the process died without a word
    assert back.current == "old" and back.outcome["event"] == "rolled_back" and back.outcome["failed"] == "new"
    assert os.readlink(store.root / "current") == "old" and store.recover(window_s=60) is None


def test_bundle_keygen_and_a_signed_pack_from_the_command_line(tmp_path, v2, capsys):
    import tarfile

    from edge.cli import main
    from edge.formats.signing import verify

    key = tmp_path / "fleet.pem"
    assert main(["bundle", "keygen", "--out", str(key)]) == 0
    public = capsys.readouterr().out.split("public_key: ")[1].strip()
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["bundle", "keygen", "--out", str(key)]) == 2  # never overwritten
    archive = tmp_path / "v2.tar"
    assert main(["bundle", "pack", str(v2), "--out", str(archive), "--sign", str(key)]) == 0
    with tarfile.open(archive) as tar:
        assert tar.getnames()[:2] == ["manifest.json", "manifest.sig"]
    verify(unpack(archive, tmp_path / "out", max_bytes=10**9).path, public)


def test_pack_ships_only_what_the_device_runs_and_the_device_checks_before_writing(tmp_path, bundle_dir, capsys):
    """`bundle pack --for` a Pi's config: int8 and the acceptance set under a manifest that still verifies.
    A device refuses, before writing anything: an archive without its variant, one signed by another
    key, and a member the manifest does not list."""
    import tarfile

    from edge.cli import main
    from edge.formats.signing import generate_key

    full, slim = tmp_path / "full.tar", tmp_path / "pi.tar"
    pack(bundle_dir, full)
    assert (
        main(["bundle", "pack", str(bundle_dir), "--out", str(slim), "--for", str(ROOT / "firmware_config/rpi5.yaml")])
        == 0
    )
    print(f"archive: every variant {full.stat().st_size / 1e6:.1f} MB, --for rpi5 {slim.stat().st_size / 1e6:.1f} MB")
    with tarfile.open(slim) as tar:
        assert tar.getnames() == ["manifest.json", "acceptance.npz", "int8.tflite"]
    bundle = unpack(slim, tmp_path / "pi", max_bytes=10**9, variant="int8")
    assert bundle.variant_names() == ["int8"] and bundle.manifest.probes == {}
    bundle.verify()
    assert slim.stat().st_size < full.stat().st_size / 4
    with pytest.raises(BundleError, match="has no 'onnx' variant, which this device's model.variant asks for"):
        unpack(slim, tmp_path / "jetson", max_bytes=10**9, variant="onnx")
    assert not (tmp_path / "jetson").exists()
    # signed by another key: refused on the manifest alone
    public = generate_key(tmp_path / "fleet.pem")
    generate_key(tmp_path / "other.pem")
    pack(bundle_dir, tmp_path / "forged.tar", key=tmp_path / "other.pem", variants=["int8"])
    with pytest.raises(BundleError, match="signature check failed"):
        unpack(tmp_path / "forged.tar", tmp_path / "forged", max_bytes=10**9, public_key=public)
    assert not (tmp_path / "forged").exists()
    # a file the manifest does not vouch for
    extra = tmp_path / "extra.tar"
    with tarfile.open(slim) as source, tarfile.open(extra, "w") as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member))
        tar.add(bundle_dir / "float32.tflite", arcname="float32.tflite")
    with pytest.raises(BundleError, match="'float32.tflite' is not listed in the manifest"):
        unpack(extra, tmp_path / "extra", max_bytes=10**9)
    assert not (tmp_path / "extra").exists()
    assert main(["bundle", "pack", str(bundle_dir), "--out", str(tmp_path / "x.tar"), "--variants", "int4"]) == 2
    assert "no variant 'int4'" in capsys.readouterr().err


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
    sub = Subscriber(broker.port)
    process = start(config)
    try:
        assert sub.wait_for("classification"), "daemon did not start"
        assert sorted(p.name for p in store.glob(".*")) == []
    finally:
        err = stop(process)
        sub.close()
    assert process.returncode == 0, err[-2000:]


def test_an_update_that_does_not_fit_is_refused_before_it_fills_the_card(tmp_path, v1, v2, web, broker, clip_factory):
    """The model store on a small filesystem of its own (a tmpfs in the daemon's mount namespace, as a small
    card partition): an archive that would not fit with its unpacked copy is refused before a byte is
    written, with the sizes on MQTT, nothing is left behind, and the old model keeps serving."""
    url, digest = publish(web, v2, "v2.tar")
    archive = web[0] / "v2.tar"
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
        assert not result["ok"] and "to download and as many to unpack, only" in result["error"], result
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
