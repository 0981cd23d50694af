"""The on-device sample store, corrections, and the way back to training.

Real JPEG files on disk, a real SIGKILL in the middle of writes, the daemon as a subprocess with a
real broker, and `smartbin samples pull` feeding `smartbin train`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.config import SamplesConfig
from edge.storage.samples import SampleStore
from edge.wire.payloads import Decision, Sample
from tests.support import BACKBONE, ROOT, write_config
from tests.support.mqtt_client import Subscriber, answered

TOPIC = "smartbin/test-bin/command"
NOW = time.time() - 3600  # the samples' times: recent, within the retention time


def decision(i: int, confidence: float = 0.3) -> dict:
    return {
        "event_id": f"{i:08d}abcdef0123456789",
        "ts": NOW + i * 0.01,
        "label": "peel",
        "label_index": 1,
        "bin": "kitchen",
        "confidence": confidence,
        "votes": 5,
        "frames": 5,
        "reason": "low_confidence" if confidence < 0.6 else "vote",
    }


def check_samples(folder: Path) -> int:
    """Every sample on disk is whole: its JSON parses, its JPEG decodes. Returns how many there are."""
    metas = sorted(folder.glob("*.json"))
    for meta in metas:
        data = json.loads(meta.read_text(encoding="utf-8"))
        assert data["event_id"] and data["kept_because"]
        image = cv2.imread(str(meta.with_suffix(".jpg")))
        assert image is not None, f"{meta.with_suffix('.jpg')} does not decode"
    assert not [p for p in folder.glob("*.jpg") if not p.with_suffix(".json").exists()]
    return len(metas)


def test_the_store_stays_under_its_byte_cap_over_ten_thousand_frames(tmp_path: Path):
    config = SamplesConfig(path=tmp_path / "samples", max_bytes=300_000, min_free_bytes=0, confident_fraction=0.0)
    store = SampleStore(config, "other").start()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    queued = 0
    for i in range(10_000):
        while not store.offer(Sample(**decision(i), model={"name": "m"}), images[i % 8]):
            time.sleep(0.0005)  # the writer's queue is full: wait (the daemon would count a drop instead)
        queued += 1
        # confident decisions (not kept unless drawn at random, here never) leave the store alone
        assert not store.offer(Sample(**decision(i, confidence=0.99) | {"bin": "kitchen"}), images[0])
    store.stop(timeout=60)
    counts = store.counts()
    on_disk = sum(p.stat().st_size for p in config.path.iterdir())
    print(f"10,000 frames: {counts}, {on_disk} bytes on disk")
    assert counts["written"] == queued == 10_000 and counts["errors"] == 0
    assert on_disk <= config.max_bytes and counts["bytes"] <= config.max_bytes
    kept = check_samples(config.path)
    assert 0 < kept < 10_000 and kept == counts["kept"]
    names = sorted(p.stem for p in config.path.glob("*.json"))
    assert names[-1].endswith(decision(9_999)["event_id"][:12])  # the newest stayed, the oldest went
    # a full queue is counted, never waited on
    blocked = SampleStore(SamplesConfig(path=tmp_path / "b", queue=4), "other")  # not started: nothing drains
    results = [blocked.offer(Sample(**decision(i)), images[0]) for i in range(10)]
    assert results.count(True) == 4 and blocked.dropped == 6


def test_a_frame_flagged_before_any_decision_and_answered_is_pulled_with_its_answer(tmp_path: Path):
    """The operator flags a frame before the bin has classified anything (the sample has no label of the
    bin's) and answers it at the review station: `samples pull` takes it with the answer, beside a labelled
    decision left unanswered, instead of dropping it."""
    config = SamplesConfig(path=tmp_path / "samples", min_free_bytes=0)
    store = SampleStore(config, "other").start()
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert store.offer(Sample(event_id="flag-1-1796600000", ts=NOW), image, flagged=True)  # as flag() writes it
    assert store.offer(Sample(**decision(2)), image)
    deadline = time.monotonic() + 20
    while store.counts()["written"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.correct("flag-1-1796600000", "cup")
    store.stop()
    assert main(["samples", "pull", str(config.path), "--out", str(out := tmp_path / "pulled")]) == 0
    record = json.loads((out / "field_samples.json").read_text(encoding="utf-8"))
    assert [(r["label"], r["reviewed"], r["predicted"]) for r in record] == [("cup", True, None)]
    unreviewed = json.loads((out / "unreviewed" / "field_samples.json").read_text(encoding="utf-8"))
    assert [(r["label"], r["reviewed"]) for r in unreviewed] == [("peel", False)]


WRITER = """
import sys, time, numpy as np
from edge.cli import main
from edge.config import SamplesConfig
from edge.storage.samples import SampleStore
from edge.wire.payloads import Sample
store = SampleStore(SamplesConfig(path=sys.argv[1], min_free_bytes=0, max_bytes=5_000_000, queue=2), "other").start()
rng = np.random.default_rng(int(sys.argv[2]))
image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # ~900 kB JPEGs: writes take a while
print("ready", flush=True)
i = 0
while True:
    d = {"event_id": f"{sys.argv[2]}{i:07d}xxxxxxxx", "ts": time.time(), "label": "a", "label_index": 0,
         "bin": "other", "confidence": 0.2, "votes": 1, "frames": 1, "reason": "low_confidence"}
    store.offer(Sample(**d), image)
    i += 1
"""


def test_sigkill_during_writes_leaves_no_corrupt_sample(tmp_path: Path):
    folder = tmp_path / "samples"
    for round_ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(round_)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.17 * round_)  # somewhere inside a write
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        leftovers = list(folder.glob(".*.tmp"))
        store = SampleStore(SamplesConfig(path=folder, min_free_bytes=0), "other").start()  # takes stock
        store.stop()
        assert not list(folder.glob(".*.tmp")), "temporary files left after a restart"
        print(f"round {round_}: {check_samples(folder)} whole samples, {len(leftovers)} partial write(s) cleared")
    assert check_samples(folder) > 0


@pytest.mark.slow
def test_decisions_are_sampled_corrected_flagged_pulled_and_trained_on(
    tmp_path: Path, bundle_dir: Path, dataset_dir: Path, weights_file: Path, broker, clip_factory, capsys, monkeypatch
):
    from edge.tools.localbroker import free_port

    clip, _ = clip_factory(items=4)
    uri = f"file://{clip}?loop=1&realtime=1"
    port = free_port()
    web = {"web__enabled": True, "web__port": port, "web__password_env": "SMARTBIN_WEB_PASSWORD"}
    config = write_config(tmp_path / "config.yaml", bundle_dir, uri, broker.port, decision__min_confidence=1.0, **web)
    monkeypatch.setenv("SMARTBIN_WEB_PASSWORD", "pw")  # the daemon's and `samples pull`'s
    samples = tmp_path / "samples"
    sub = Subscriber(broker.port)
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    field = tmp_path / "field"
    try:
        first = sub.wait_decisions(1)[0]  # min_confidence 1.0: every decision goes to the default bin
        assert first["reason"] == "low_confidence"
        deadline = time.monotonic() + 20
        while not list(samples.glob(f"*-{first['event_id'][:12]}.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        meta = json.loads(next(samples.glob(f"*-{first['event_id'][:12]}.json")).read_text(encoding="utf-8"))
        assert meta["event_id"] == first["event_id"] and meta["label"] == first["label"]
        assert set(meta["kept_because"]) >= {"low_confidence", "default_bin"} and meta["top_k"]
        assert meta["model"]["variant"] == "int8"

        sub.publish(TOPIC, json.dumps({"id": "c", "action": "correct", "event_id": first["event_id"], "label": "cup"}))
        corrected = answered(sub, "c")
        assert corrected["ok"] and corrected["result"]["known_label"] is False, corrected
        stored = json.loads((samples / f"{corrected['result']['sample']}.json").read_text(encoding="utf-8"))
        assert stored["correction"]["label"] == "cup"

        sub.publish(TOPIC, json.dumps({"id": "f", "action": "flag"}))
        flagged = answered(sub, "f")
        assert flagged["ok"]
        deadline = time.monotonic() + 20
        while not list(samples.glob("*-flag-*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(next(samples.glob("*-flag-*.json")).read_text())["kept_because"] == ["flagged"]

        sub.publish(TOPIC, json.dumps({"id": "x", "action": "correct", "event_id": "nope", "label": "cup"}))
        missing = answered(sub, "x")
        assert not missing["ok"] and "no sample and no recent decision" in missing["error"]
        metrics = sub.wait_for("metrics", where=lambda m: (m.json().get("samples") or {}).get("kept", 0) >= 2)
        assert metrics, "the metrics do not count the samples"
        counts = metrics[-1].json()["counts"]
        assert counts["today"]["items"] >= 1 and counts["today"]["per_bin"]["other"] == counts["today"]["items"]
        assert counts["today"]["low_confidence_share"] == 1.0  # min_confidence 1.0: every decision

        # the status page's "correct…" button posts this; the page serves the samples to `samples fetch`
        second = sub.wait_decisions(2)[1]
        body = json.dumps({"event_id": second["event_id"], "label": "bottle"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/correct", data=body, method="POST")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"smartbin:pw").decode())
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            queued = json.loads(response.read())["queued"]
        assert answered(sub, queued)["ok"]
        inbox = tmp_path / "inbox"
        fetched = ["samples", "fetch", f"http://127.0.0.1:{port}", "--out", str(inbox)]
        assert main(fetched) == 2  # no password
        assert "--password-env" in capsys.readouterr().err
        assert main([*fetched, "--password-env", "SMARTBIN_WEB_PASSWORD"]) == 0
        assert main(["samples", "pull", str(inbox), "--out", str(field)]) == 0
        # a page given to pull, as scripts of the release before did: still read, with the line naming fetch
        old_way = ["samples", "pull", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "old-way")]
        capsys.readouterr()
        assert main([*old_way, "--password-env", "SMARTBIN_WEB_PASSWORD"]) == 0
        assert "smartbin samples fetch" in capsys.readouterr().err and list((tmp_path / "old-way").iterdir())
        counts = sub.wait_for("metrics", where=lambda m: m.json()["counts"]["total"]["corrections"].get("bottle"))
        assert counts and counts[-1].json()["counts"]["total"]["corrections"] == {"cup": 1, "bottle": 1}
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        sub.close()
    assert process.returncode == 0, err[-2000:]
    assert check_samples(samples) >= 2
    # the counts outlive the process
    from edge.storage.counters import Counters

    kept = Counters(tmp_path / "counters.sqlite").summary()["total"]
    assert kept["items"] >= 2 and kept["corrections"] == {"cup": 1, "bottle": 1}

    # the way back: pulled (fetched over HTTP above; from a copied folder here, the same) into a dataset of the
    # corrected samples and unreviewed/ (the rest), then trained on
    copied = tmp_path / "copied"
    assert main(["samples", "pull", str(samples), "--out", str(copied)]) == 0
    for dataset in (field, copied):
        record = json.loads((dataset / "field_samples.json").read_text(encoding="utf-8"))
        got = sorted((r["label"], r["reviewed"], r["event_id"]) for r in record)
        assert got == sorted([("cup", True, first["event_id"]), ("bottle", True, second["event_id"])])
        assert len(list((dataset / "unreviewed").glob("img_*.txt"))) >= 1
    capsys.readouterr()
    assert main(["dataset", "check", str(field)]) == 0
    assert "2 image(s) pulled from the field" in capsys.readouterr().out
    run = tmp_path / "run"
    train = ["train", "--data", str(dataset_dir), "--data", str(field), "--out", str(run)]
    assert (
        main([*train, "--weights", str(weights_file), "--backbone", BACKBONE, "--img-size", "64", "--epochs", "1"]) == 0
    )
    labels = json.loads((run / "labels.json").read_text(encoding="utf-8"))
    base = json.loads((dataset_dir / "garbage_classify_rule.json").read_text(encoding="utf-8"))
    assert len(labels) == len(base) + 2 and {lab["name"] for lab in labels[-2:]} == {"cup", "bottle"}
    assert all(lab["bin"] == "other" for lab in labels[-2:])


def test_counters_keep_days_apart_and_outlive_a_reopen(tmp_path: Path):
    from edge.storage.counters import Counters, today

    path = tmp_path / "counters.sqlite"
    counters = Counters(path)
    counters.add([("label", "can"), ("bin", "recyclable"), ("reason", "vote")], day="2026-01-01")
    for reason in ("vote", "vote", "low_confidence", "vote"):
        bin_name = "kitchen" if reason == "vote" else "other"
        counters.count_decision(
            Decision(**decision(0) | {"event_id": "a" * 32, "bin": bin_name, "reason": reason}, device_id="t")
        )
    counters.close()
    summary = Counters(path).summary()
    assert summary["today"]["items"] == 4 and summary["total"]["items"] == 5
    assert summary["today"]["per_bin"] == {"other": 1, "kitchen": 3, "recyclable": 0, "hazardous": 0}
    assert summary["today"]["low_confidence_share"] == 0.25
    assert summary["total"]["per_label"] == {"can": 1, "peel": 4} and today() != "2026-01-01"
