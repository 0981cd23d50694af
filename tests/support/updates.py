"""Over-the-air updates as the tests drive them: a bundle packed onto a web server, the daemon started on one
model and sent another, its answers read back."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from edge.formats.archive import pack
from tests.support import OTHER_LABELS, ROOT, write_config
from tests.support.mqtt_client import Subscriber, answered  # noqa: F401 - re-exported for the update tests
from tests.support.servers.slow_link import SlowLink

TOPIC = "smartbin/test-bin/command"
OTHER_NAMES = {v.split("/", 1)[1] for v in OTHER_LABELS.values()}
LINK_DELAY_S = 2.0  # many frames of the 20 fps clip, whatever the CPU


def slim_copy(source: Path, dest: Path, created: str) -> Path:
    """A copy of a bundle with only its int8 variant (a smaller archive) and the given creation time."""
    dest.mkdir(parents=True)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["variants"] = {"int8": manifest["variants"]["int8"]}
    manifest["probes"] = {}
    manifest["created"] = created
    for name in ("int8.tflite", "acceptance.npz"):
        shutil.copy(source / name, dest / name)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def publish(web, folder: Path, name: str) -> tuple[str, str]:
    """Pack a bundle into the server's folder: (url, sha256)."""
    root, base = web
    return f"{base}/{name}", pack(folder, root / name)


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    return err


def outcome(sub: Subscriber, command_id: str, timeout: float = 120) -> dict:
    """The last answer to an update: done (switched) or refused."""
    found = sub.wait_for(
        "command/result",
        timeout=timeout,
        where=lambda m: m.json().get("id") == command_id and (not m.json()["ok"] or m.json()["result"].get("done")),
    )
    assert found, f"no final answer to {command_id}: {[m.json() for m in sub.on('command/result')]}"
    return found[0].json()


def labels_after(sub: Subscriber, ts: float, count: int = 5) -> set[str]:
    found = sub.wait_for("classification", count=count, where=lambda m: m.json()["ts"] > ts)
    assert len(found) >= count, "classification stopped"
    return {m.json()["label"] for m in found}


def config_for(tmp_path: Path, bundle: Path, clip: Path, port: int, window: float) -> Path:
    return write_config(
        tmp_path / "config.yaml", bundle, f"file://{clip}?loop=1&realtime=1", port, updates__health_window_s=window
    )


def start_and_update(tmp_path, v1, v2, web, broker, clip_factory, window: float):
    """The daemon on v1 (classifying), v2 served over a slow link, update_model sent: (config, subscriber,
    process, sha256). The link holds the download for LINK_DELAY_S, so that the old model's classifications
    during the update are there on any machine (a fast one fetches a loopback file between two frames)."""
    _, digest = publish(web, v2, "v2.tar")
    link = SlowLink(int(web[1].rsplit(":", 1)[1]), LINK_DELAY_S)
    url = f"http://127.0.0.1:{link.port}/v2.tar"
    clip, _ = clip_factory(items=4)
    config = config_for(tmp_path, v1, clip, broker.port, window=window)
    sub = Subscriber(broker.port)
    process = start(config)
    assert sub.wait_for("classification"), "daemon did not start"
    assert not labels_after(sub, 0, 3) & OTHER_NAMES
    sub.publish(TOPIC, json.dumps({"id": "up", "action": "update_model", "url": url, "sha256": digest}))
    return config, sub, process, digest
