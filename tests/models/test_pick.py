"""`model.variant: auto`: the bin times what the bundle and this device offer and serves the fastest variant that
gives every reference image the float model's top-1. Real bundles, real runtimes, each trial a real process; the
faults are a variant whose weights were damaged after conversion (it loads, its sha256 is the manifest's) and an
ONNX Runtime that dies of a segmentation fault (tests/support/fakes.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.formats.bundle import Bundle
from edge.models.pick import PickStore, machine_key, pick
from edge.tools.localbroker import free_port
from tests.support import ROOT, finish, poll, start_daemon, write_config
from tests.support.fakes import fakes_path
from tests.support.mqtt_client import Subscriber

pytestmark = pytest.mark.slow


def damage_weights(bundle: Path, variant: str) -> None:
    """The variant's largest weight buffer garbled, the manifest made to vouch for it: it loads and verifies,
    and sorts wrongly (a converter or a storage fault no checksum catches)."""
    from tensorflow.lite.python import schema_py_generated as schema

    path = bundle / Bundle.open(bundle).manifest.variants[variant].file
    raw = bytearray(path.read_bytes())
    model = schema.Model.GetRootAsModel(bytes(raw), 0)
    buffers = [model.Buffers(i).DataAsNumpy() for i in range(model.BuffersLength())]
    largest = max((b for b in buffers if not isinstance(b, int)), key=len).tobytes()
    start = bytes(raw).find(largest)
    for i in range(start, start + len(largest)):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["variants"][variant].update(sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_the_fastest_that_passes_is_chosen_and_a_wrong_or_crashing_one_ruled_out(tmp_path, bundle_dir, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    damage_weights(bundle, "dynamic")
    monkeypatch.setenv("PYTHONPATH", f"{fakes_path(tmp_path / 'fakes')}:{ROOT}")
    monkeypatch.setenv("SMARTBIN_FAKE_CRASH_ONNXRUNTIME", "1")
    result = pick(Bundle.open(bundle), runs_per=10)
    by_variant = {}
    for trial in result.trials:
        by_variant.setdefault(trial.variant, []).append(trial)
    assert set(by_variant) == {"float32", "float16", "dynamic", "int8", "onnx", "onnx_int8"}
    assert all("reference images agree" in t.reason for t in by_variant["dynamic"]), by_variant["dynamic"]
    for variant in ("onnx", "onnx_int8"):
        assert all(t.reason == "crashed (SIGSEGV)" for t in by_variant[variant]), by_variant[variant]
    passed = [t for t in result.trials if t.passed]
    assert {t.variant for t in passed} == {"float32", "float16", "int8"}
    fastest = min(passed, key=lambda t: t.p50_ms)
    assert (result.chosen.variant, result.chosen.backend, result.chosen.threads) == (
        fastest.variant,
        fastest.backend,
        fastest.threads,
    )
    # kept with what it was measured on; another bundle (or CPU, or runtime) is measured again
    store = PickStore(tmp_path / "store")
    store.save(result)
    assert store.load(machine_key(Bundle.open(bundle))).chosen == result.chosen
    assert store.load(machine_key(Bundle.open(bundle_dir))) is None  # the undamaged files: another key
    store.save(replace(result, key=machine_key(Bundle.open(bundle_dir)), chosen=None))
    assert store.load(machine_key(Bundle.open(bundle))).chosen == result.chosen  # one kept per bundle


def test_a_bin_on_auto_serves_its_pick_keeps_it_across_a_restart_and_picks_again_for_a_new_bundle(
    tmp_path, bundle_dir, other_bundle_dir, broker, clip_factory
):
    """The real daemon: the default serves at once, the pick follows beside the loop and is switched in; after a
    restart the kept pick serves from the first frame, measured no more; another bundle is measured anew."""
    clip, _ = clip_factory(items=4)
    uri = f"file://{clip}?loop=1&realtime=1"
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml", bundle_dir, uri, broker.port, model__variant="auto", web__enabled=True, web__port=port
    )
    sub = Subscriber(broker.port)
    picks = lambda: [m.json() for m in sub.on("test-bin/model") if m.json().get("pick")]  # noqa: E731
    statuses = lambda: [m.json() for m in sub.on("test-bin/status") if m.json()["state"] == "online"]  # noqa: E731
    serving = lambda s: {"variant": s["model"]["variant"], "backend": s["backend"]}  # noqa: E731
    process = start_daemon(config)
    try:
        assert poll(picks, 120), "no pick in …/model"
        info = picks()[-1]["pick"]
        chosen = {k: info["chosen"][k] for k in ("variant", "backend")}
        assert {t["variant"] for t in info["trials"]} == {"float32", "float16", "dynamic", "int8", "onnx", "onnx_int8"}
        assert poll(lambda: statuses() and serving(statuses()[-1]) == chosen, 60), (chosen, statuses()[-1:])
        # the page and /metrics show the choice and the figures. The page reads the view the loop posts every
        # 0.25 s: where the default was the pick (no switch), …/model can say so before the next view is posted
        page = lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10).read())  # noqa: E731
        state = poll(lambda: (s := page())["picked"] and s, 30) or page()
        assert (state["picked"] or "").startswith(f"{chosen['variant']} on {chosen['backend']}"), state["picked"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        picked = next(m for m in text_string_to_metric_families(metrics) if m.name == "smartbin_pick_invoke_seconds")
        marked = [s.labels for s in picked.samples if s.labels["chosen"] == "true"]
        assert marked == [{**chosen, "threads": str(info["chosen"]["threads"]), "chosen": "true"}], marked
    finally:
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
    assert code == 0, err[-2000:]
    before = len(statuses())
    process = start_daemon(config)  # the kept pick: served from the start, not measured again
    try:
        assert poll(lambda: len(statuses()) > before, 60)
        assert serving(statuses()[before]) == chosen
        assert poll(lambda: len(picks()) > 1, 30) and picks()[-1]["pick"]["measured"] == info["measured"]
        sub.publish(
            "smartbin/test-bin/command",
            json.dumps({"id": "r", "action": "reload_model", "bundle": str(other_bundle_dir)}),
        )
        other = lambda: [p for p in picks() if p["bundle"] == str(other_bundle_dir.resolve())]  # noqa: E731
        assert poll(other, 120), picks()[-1:]
        assert other()[-1]["pick"]["measured"] > info["measured"]
    finally:
        process.send_signal(signal.SIGTERM)
        code, err = finish(process)
        sub.close()
    assert code == 0 and "Traceback" not in err, err[-2000:]


def test_bench_pick_shows_the_table_and_writes_the_boards_row_and_page(tmp_path, bundle_dir, capsys):
    from edge.cli import main

    rows, page = tmp_path / "rows.jsonl", tmp_path / "boards.md"
    argv = ["bench", "--pick", str(bundle_dir), "--runs", "20", "--e2e", "--row", str(rows), "--boards", str(rows)]
    assert main([*argv, "--out", str(page)]) == 0
    out = capsys.readouterr().out
    assert "chosen" in out and "int8" in out and "onnx_int8" in out
    row = json.loads(rows.read_text())
    chosen = row["chosen"]
    passed = [t for t in row["trials"] if t["passed"]]
    assert min(passed, key=lambda t: t["p50_ms"])["variant"] == chosen["variant"]
    assert set(row["e2e_ms"]) == {"e2e", "e2e@30fps"} and all(v["p50"] > 0 for v in row["e2e_ms"].values())
    text = page.read_text()
    assert f"**{chosen['variant']} {chosen['backend']} {chosen['threads']}t**" in text
    assert text.count("not yet measured") == 2  # the Pi 5 and the Orin, until someone measures them
