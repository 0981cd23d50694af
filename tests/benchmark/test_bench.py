"""edge/bench.py briefly on the small bundle: the JSON shape, ratios consistent with the raw figures,
and e2e timed on messages that really arrived."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, keras_arithmetic

pytestmark = pytest.mark.slow
RESULT_KEYS = {
    "variant",
    "backend",
    "threads",
    "mode",
    "latency_ms",
    "throughput_fps",
    "rss_peak_mb",
    "load_s",
    "first_inference_s",
    "model_mb",
    "top1",
    "agreement",
}


@pytest.fixture(scope="module")
def report(bundle_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "edge" / "bench.py"),
            "--bundle",
            str(bundle_dir),
            "--variants",
            "int8,float32",
            "--threads",
            "1",
            "--runs",
            "15",
            "--warmup",
            "2",
            "--modes",
            "invoke,pipeline,e2e",
            "--json",
            str(out / "b.json"),
            "--markdown",
            str(out / "b.md"),
            "--plot",
            str(out / "b.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "b.json").read_text())
    data["_markdown"] = (out / "b.md").read_text()
    data["_png"] = (out / "b.png").read_bytes()[:8]
    data["_console"] = result.stdout
    return data


def test_json_shape(report, run_dir: Path):
    gflop, _ = keras_arithmetic(run_dir / "model.keras")
    assert {"environment", "results", "ratios"} <= set(report)
    env = report["environment"]
    assert env["cores"] >= 1 and "ai-edge-litert" in env["libraries"] and isinstance(env["warnings"], list)
    modes = {(r["variant"], r["mode"]) for r in report["results"]}
    all_modes = ("invoke", "invoke@30fps", "pipeline", "e2e", "e2e@30fps")
    assert modes == {(v, m) for v in ("int8", "float32") for m in all_modes}
    assert env["instruction_sets"] and set(env["instruction_sets"]) <= {
        "sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512fp16",
        "asimd", "asimdhp", "asimddp", "i8mm", "sve",
    }  # fmt: skip
    for r in report["results"]:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        lat = r["latency_ms"]
        assert set(lat) == {"min", "p50", "p90", "p99", "max", "mean", "std"}
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["throughput_fps"] > 0 and r["rss_peak_mb"] > 0 and r["model_mb"] > 0
        assert r["engine"]["backend"] == "litert" and r["engine"]["threads"] == 1
        nodes = r["engine"]["delegate_nodes"]
        assert nodes["delegate"] == "xnnpack" and 0 < nodes["delegated"] < nodes["total"]
        if r["mode"] == "invoke":
            # the floor: the larger of the nominal peak and the library's own rate on matrix products
            assert len(r["probe_gops"]) == 2 and min(r["probe_gops"]) > 0
            best = max(r["nominal_peak"]["gops"] or 0, *r["probe_gops"])
            assert r["floor_ms"] == pytest.approx(r["model_gflop"] / best * 1e3)
            assert r["floor_basis"] in ("nominal peak", "measured probe")
            assert ("int8" if r["variant"] == "int8" else "float32") + ":" in r["nominal_peak"]["explain"]
            assert r["model_gflop"] == pytest.approx(gflop, rel=0.01)  # the Keras model's own arithmetic
    assert report["_png"] == b"\x89PNG\r\n\x1a\n"
    assert "| int8 | litert | 1 | invoke |" in report["_markdown"] and "xnnpack" in report["_markdown"]
    assert "int8" in report["_console"] and "p50" in report["_console"]


def test_ratios_match_the_raw_figures(report):
    rows = {(r["variant"], r["mode"]): r for r in report["results"]}
    for key, ratio in report["ratios"]["vs_invoke"].items():
        variant, _, _, mode = key.split("/")
        r, base = rows[(variant, mode)], rows[(variant, ratio["base"])]
        assert ratio["throughput_ratio"] == pytest.approx(r["throughput_fps"] / base["throughput_fps"])
        assert ratio["p50_added_ms"] == pytest.approx(r["latency_ms"]["p50"] - base["latency_ms"]["p50"])
    assert len(report["ratios"]["vs_invoke"]) == 6
    assert report["ratios"]["vs_invoke"]["int8/litert/1t/e2e@30fps"]["base"] == "invoke@30fps"
    assert report["ratios"]["vs_invoke"]["int8/litert/1t/e2e"]["base"] == "invoke"
    assert set(report["ratios"]["vs_floor"]) == {"int8/litert/1t/invoke", "float32/litert/1t/invoke"}
    for key, ratio in report["ratios"]["vs_floor"].items():
        r = rows[(key.split("/")[0], "invoke")]
        assert ratio["p50_ratio"] == pytest.approx(r["latency_ms"]["p50"] / r["floor_ms"])
    for key, ratio in report["ratios"]["vs_float32"].items():
        variant, _, _, mode = key.split("/")
        r, ref = rows[(variant, mode)], rows[("float32", mode)]
        assert ratio["base"] == "float32"
        assert ratio["p50_speedup"] == pytest.approx(ref["latency_ms"]["p50"] / r["latency_ms"]["p50"])
        assert ratio["size_ratio"] == pytest.approx(r["model_mb"] / ref["model_mb"]) and ratio["size_ratio"] < 0.5


def test_each_variant_is_held_against_the_float_model_of_its_own_bundle_and_format():
    from edge.bench import compute_ratios

    def row(variant: str, backend: str, p50: float, mb: float) -> dict:
        return {"variant": variant, "backend": backend, "threads": 2, "mode": "invoke", "status": "ok",
                "latency_ms": {"p50": p50}, "model_mb": mb}  # fmt: skip

    rows = [row("float32 (a)", "litert", 40, 100), row("int8 (a)", "litert", 10, 25)]
    rows += [row("onnx (a)", "onnxruntime", 45, 100), row("onnx_int8 (a)", "onnxruntime", 15, 25)]
    rows += [row("float32 (b)", "litert", 4, 100), row("int8 (b)", "litert", 1, 25)]
    ratios = compute_ratios(rows)["vs_float32"]
    assert {key: (r["base"], r["p50_speedup"]) for key, r in ratios.items()} == {
        "int8 (a)/litert/2t/invoke": ("float32 (a)", 4.0),
        "onnx_int8 (a)/onnxruntime/2t/invoke": ("onnx (a)", 3.0),
        "int8 (b)/litert/2t/invoke": ("float32 (b)", 4.0),
    }


def test_e2e_measured_messages_that_arrived(report):
    for r in report["results"]:
        if r["mode"].startswith("e2e"):
            # 15 frames, 3 items of 5 votes each: every frame classified and published, not just the first item's
            assert r["messages_sent"] == 15 and r["messages_received"] == 15
            assert r["latency_ms"]["min"] > 0
            stages = r["stages_ms"]
            assert stages["capture_to_publish"] > 0 and stages["publish_to_arrival"] > 0
            loop = {k[len("loop_") :] for k in stages if k.startswith("loop_")}
            assert {"wait", "preprocess", "infer", "postprocess", "decide", "json", "publish", "total"} <= loop
            assert 0 < stages["outside_inference"] < r["latency_ms"]["p50"]
        if r["mode"] == "e2e":
            assert r["cold_start_s"] > 0
        if r["mode"] == "pipeline":
            assert set(r["stages_ms"]) == {"capture_wait", "preprocess", "infer", "postprocess"}
            inter = r["interleaved"]
            assert inter["ratio"] == pytest.approx(inter["pipeline_fps"] / inter["invoke_fps"])
            assert inter["pipeline_fps"] == pytest.approx(r["throughput_fps"])


@pytest.mark.parametrize("command", [["edge/bench.py"], ["-m", "edge.cli", "bench"]], ids=["script", "smartbin"])
def test_bad_arguments_are_one_line_errors(bundle_dir: Path, command: list[str]):
    """Both ways in reach the bench's own options (`smartbin bench --bundle` was "unrecognized arguments")."""
    result = subprocess.run(
        [sys.executable, *command, "--bundle", str(bundle_dir), "--variants", "int4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "'int4' is not in" in result.stderr and "Traceback" not in result.stderr


def test_onnx_runtime_placement_is_read_from_its_own_log(bundle_dir: Path, run_dir: Path, tmp_path: Path):
    """ONNX Runtime states per provider how many nodes it took; the bench reports that, not the provider list."""
    out = tmp_path / "onnx.json"
    args = ["--variants", "onnx", "--threads", "1", "--runs", "3", "--warmup", "1", "--modes", "invoke"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "edge" / "bench.py"), "--bundle", str(bundle_dir), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["results"]
    nodes = row["engine"]["delegate_nodes"]
    assert nodes["placement"] == {"CPUExecutionProvider": nodes["total"]}
    assert nodes["total"] > keras_arithmetic(run_dir / "model.keras")[1]
    assert nodes["delegate"] == "CPUExecutionProvider" and nodes["delegated"] == nodes["total"]
    # the arithmetic is counted on the bundle's TFLite file: the same network
    assert row["model_gflop"] == pytest.approx(keras_arithmetic(run_dir / "model.keras")[0], rel=0.01)
    assert row["floor_ms"] > 0
    assert len(row["probe_gops"]) == 2  # the ONNX probe, run by ONNX Runtime itself


def test_a_row_faster_than_its_floor_is_reported_as_a_bug_in_the_floor():
    from edge.bench import add_floor

    probes = [{"status": "ok", "gops": 10.0}, {"status": "ok", "gops": 10.5}]
    row = {"latency_ms": {"p50": 0.001}}
    warnings = add_floor(row, "int8", 1, probes, gflop=1.0)
    assert row["floor_ms"] > 0.001 and any("a bug in the floor" in w for w in warnings)
    slow = {"latency_ms": {"p50": 1e6}}
    assert add_floor(slow, "int8", 1, probes, gflop=1.0) == []
    moved = add_floor(
        {"latency_ms": {"p50": 1e6}},
        "float32",
        1,
        [{"status": "ok", "gops": 10.0}, {"status": "ok", "gops": 20.0}],
        1.0,
    )
    assert any("moved from 10 to 20 GOP/s" in w for w in moved)


def test_a_bench_daemon_keeps_off_the_devices_own_state(tmp_path: Path):
    """bench's daemons (e2e, cold start) run beside the device's service: every state file the daemon would
    otherwise share with it under /var/lib/smartbin is moved or switched off, so a bench neither rolls back
    the device's model nor counts or samples its frames, and measures the bundle it was given."""
    from pydantic import BaseModel

    from edge.benchmark.worker import private_state
    from edge.config import parse_config

    state = private_state(tmp_path)
    config = parse_config(
        {"device_id": "bench", "model": {"bundle": str(tmp_path)}, "source": {"uri": "synthetic://"}, **state}
    )
    shared = []
    for section, value in config:
        if not isinstance(value, BaseModel) or section == "actuator":  # the actuator is its own service
            continue
        if not getattr(value, "enabled", True):
            continue
        for key, field in type(value).model_fields.items():
            if str(field.default).startswith("/var/lib/smartbin") and str(getattr(value, key)) == str(field.default):
                shared.append(f"{section}.{key}")
    assert shared == [], "a bench daemon would write the device's own state"
    assert config.outbox.path.name == config.counters.path.name == ":memory:"
    assert config.updates.store.parent == tmp_path


DEVICE_WITHOUT = """
import runpy, sys
sys.modules.update(rich=None, matplotlib=None)  # absent, as in a device's venv: import fails, find_spec is None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_bench_runs_on_a_device_without_rich_or_matplotlib(bundle_dir: Path, tmp_path: Path):
    """The device's extras carry neither: the table comes out as plain text, and --plot says at once (before
    any measuring) what it needs."""
    bench = [sys.executable, "-c", DEVICE_WITHOUT, str(ROOT / "edge" / "bench.py"), "--bundle", str(bundle_dir)]
    small = ["--variants", "int8", "--threads", "1", "--runs", "3", "--warmup", "1", "--modes", "invoke"]
    plot = subprocess.run([*bench, *small, "--plot", str(tmp_path / "p.png")], capture_output=True, text=True, cwd=ROOT)
    assert plot.returncode == 2 and "--plot needs matplotlib" in plot.stderr and "Traceback" not in plot.stderr
    result = subprocess.run([*bench, *small], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("variant"))
    assert header.split()[:4] == ["variant", "backend", "thr", "mode"] and "[1/1] int8" in result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("int8"))
    assert row.split()[4] == "ok"


def test_the_shadows_cost_is_measured_side_by_side(bundle_dir: Path, tmp_path: Path):
    """`--modes shadow`: what a canary pays for a model in the shadow of its own, frames with and without it
    interleaved in one process, and the memory its engine adds (figures printed, not judged here)."""
    small = ["--variants", "int8", "--threads", "1", "--runs", "40", "--warmup", "2", "--modes", "shadow"]
    command = [sys.executable, str(ROOT / "edge" / "bench.py"), "--bundle", str(bundle_dir), *small]
    result = subprocess.run([*command, "--json", str(tmp_path / "s.json")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads((tmp_path / "s.json").read_text())["results"]
    shadow = row["shadow"]
    assert row["mode"] == "shadow" and row["status"] == "ok" and shadow["frames_per_item"] == 5
    assert shadow["alone_p50_ms"] > 0 and shadow["with_shadow_p50_ms"] == row["latency_ms"]["p50"]
    assert shadow["added_ms_per_item"] == pytest.approx(shadow["added_ms_per_frame"] * 5)
    assert "a model in the shadow adds" in result.stdout + result.stderr
