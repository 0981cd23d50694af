"""`model.variant: auto`: the bin times what the bundle and this device offer and serves the fastest variant that
gives every reference image the float model's top-1. Real bundles, real runtimes, each trial a real process; the
faults are a variant whose weights were damaged after conversion (it loads, its sha256 is the manifest's) and an
ONNX Runtime that dies of a segmentation fault (tests/support/fakes.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edge.formats.bundle import Bundle
from edge.models.pick import PickStore, machine_key, pick
from tests.support import ROOT
from tests.support.fakes import fakes_path

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
