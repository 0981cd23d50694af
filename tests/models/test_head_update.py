"""A head update (issue 52) on a real daemon whose runtime is TensorRT (ONNX Runtime's provider, faked at its
boundary: its engine "builds" into the cache beside the model): the bin serving a bundle in two parts gets an
archive of the head alone, switches to it on the backbone it has loaded (no engine built, its cache shared by
hard link), says so on …/model, and starts on it after a restart without building either. A head made for
another backbone is refused, naming why."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge.formats.archive import pack
from edge.formats.bundle import sha256_file
from edge.formats.head import HEAD_FILE, Head
from tests.support import ROOT, write_config
from tests.support.fakes import FAKE_ENGINE, fakes_path
from tests.support.mqtt_client import Subscriber
from tests.support.updates import TOPIC, outcome

pytestmark = pytest.mark.slow


def taught(source: Path, dest: Path) -> Path:
    """The bundle with another head, as a retraining of the head alone makes it: here every class moved one
    place and renamed (the same sorting, other bytes and labels), its reference probabilities moved with it."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("trt_cache*"))
    manifest = json.loads((dest / "manifest.json").read_text())
    head = Head.load(dest / HEAD_FILE)
    order = np.roll(np.arange(head.classes), 1)
    Head(head.weights[:-1] + [head.weights[-1][:, order]], head.biases[:-1] + [head.biases[-1][order]],
         head.activations).save(dest / HEAD_FILE)  # fmt: skip
    labels = manifest["labels"]
    manifest["labels"] = [{**labels[old], "index": new, "name": f"taught-{labels[old]['name']}"}
                          for new, old in enumerate(order)]  # fmt: skip
    with np.load(dest / "acceptance.npz") as data:
        np.savez_compressed(dest / "acceptance.npz", images=data["images"], probs=data["probs"][:, order])
    for key, file in (("head", HEAD_FILE), ("acceptance", "acceptance.npz")):
        manifest[key].update(sha256=sha256_file(dest / file), size=(dest / file).stat().st_size)
    manifest.update(name="taught", created="2099-01-01T00:00:00+00:00")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def run(config: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def model_when(sub: Subscriber, name: str) -> dict:
    found = sub.wait_for("model", timeout=60, where=lambda m: m.json()["name"] == name)
    assert found, [m.json()["name"] for m in sub.on("model")]
    return found[-1].json()


def test_a_head_update_serves_on_the_loaded_backbone_and_builds_no_engine(
    tmp_path: Path, split_bundle_dir: Path, web, broker, clip_factory
):
    home = Path(shutil.copytree(split_bundle_dir, tmp_path / "bundle"))
    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "c.yaml", home, f"file://{clip}?loop=1&realtime=1", broker.port,
                          model__backend="onnxruntime", model__variant="onnx", updates__health_window_s=60)  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": f"{fakes_path(tmp_path / 'fakes')}:{ROOT}",
        "SMARTBIN_FAKE_TENSORRT_BUILD_S": "0",
    }
    root, base = web
    digest = pack(taught(split_bundle_dir, tmp_path / "taught"), root / "head.tar", head_only=True)
    with tarfile.open(root / "head.tar") as tar:  # the head, its references and the manifest: no backbone
        assert sorted(tar.getnames()) == ["acceptance.npz", HEAD_FILE, "manifest.json"]
    other = taught(split_bundle_dir, tmp_path / "other")  # made for another backbone: its onnx file differs
    (other / "model.onnx").write_bytes((other / "model.onnx").read_bytes() + b"\0")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["variants"]["onnx"].update(
        sha256=sha256_file(other / "model.onnx"), size=(other / "model.onnx").stat().st_size
    )
    (other / "manifest.json").write_text(json.dumps(manifest))
    other_digest = pack(other, root / "other.tar", head_only=True)

    sub = Subscriber(broker.port)
    process = run(config, env)
    try:
        before = model_when(sub, json.loads((home / "manifest.json").read_text())["name"])
        assert before["head"]["shared_backbone"] is False
        engine = home / "trt_cache" / FAKE_ENGINE  # built at the start, beside the backbone
        built = engine.stat().st_ino
        for command_id, url, sha in (
            ("foreign", f"{base}/other.tar", other_digest),
            ("head", f"{base}/head.tar", digest),
        ):
            sub.publish(TOPIC, json.dumps({"id": command_id, "action": "update_model", "url": url, "sha256": sha}))
            result = outcome(sub, command_id)
            if command_id == "foreign":
                assert not result["ok"] and "a head update made for another backbone" in result["error"], result
        assert result["ok"] and result["result"]["stage"] == "switched", result
        after = model_when(sub, "taught")
        assert after["head"]["shared_backbone"] is True and after["head"]["sha256"] != before["head"]["sha256"]
        labels = {
            m.json()["label"]
            for m in sub.wait_for("classification", 5, where=lambda m: m.json()["ts"] > after["since"])
        }
        assert labels and all(label.startswith("taught-") for label in labels), labels
        folder = tmp_path / "models" / result["result"]["model"]
        # the backbone and its engine are the same files on disk: linked, not copied or built again
        assert (folder / "model.onnx").stat().st_ino == (home / "model.onnx").stat().st_ino
        assert (folder / "trt_cache" / FAKE_ENGINE).stat().st_ino == built
    finally:
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    assert process.returncode == 0, err[-2000:]

    sub.messages.clear()
    process = run(config, env)  # the store's choice starts: the taught bundle, on its own, its engine found
    try:
        restarted = model_when(sub, "taught")
        assert restarted["head"]["shared_backbone"] is False
        assert (folder / "trt_cache" / FAKE_ENGINE).stat().st_ino == built
    finally:
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    assert process.returncode == 0, err[-2000:]
    sub.close()
