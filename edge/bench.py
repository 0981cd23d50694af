"""`python edge/bench.py` (also `smartbin bench`): latency of the model and of the whole bin.

Each (variant, backend, threads, mode) runs in a fresh process (edge/tools/benchworker.py) so that
load time and peak memory are its own; ratios are computed from figures measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python edge/bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edge.bundle import Bundle
from edge.errors import SmartbinError
from edge.runtime import BACKENDS, TFLITE_BACKENDS, available_backends, backend_for, open_engine, runs
from edge.runtime.base import NO_DELEGATE
from edge.versions import installed_versions

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
PLACEMENT_LINE = re.compile(r"(?:All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)")
PEAK_SPREAD = 1.15  # CPU speed before vs after an invoke row beyond which its floor ratio is not trusted
LIBRARIES = ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime", "onnxruntime", "paho-mqtt")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def environment() -> dict:
    """What the figures depend on, and warnings when the machine looks busy or throttled."""
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith(("model name", "Model", "Hardware"))
        ),
        platform.processor(),
    )
    cores = os.cpu_count() or 1
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    throttled = None
    try:
        throttled = (
            subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
    env = {
        "cpu": model,
        "cores": cores,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_temp_c": int(temp) / 1000 if temp and temp.isdigit() else None,
        "throttled": throttled,
        "load_avg_1m": load1,
        "libraries": installed_versions(LIBRARIES),
        "warnings": [],
    }
    if load1 is not None and load1 > 0.5 * cores:
        env["warnings"].append(f"machine looks busy: load average {load1:.1f} on {cores} cores")
    if env["governor"] not in (None, "performance"):
        env["warnings"].append(f"CPU governor is {env['governor']!r}; 'performance' gives steadier figures")
    if throttled and throttled.split("=")[-1] not in ("0x0", "0"):
        env["warnings"].append(f"the board reports throttling ({throttled})")
    if env["cpu_temp_c"] and env["cpu_temp_c"] > 80:
        env["warnings"].append(f"CPU is hot ({env['cpu_temp_c']:.0f} °C): figures may be throttled")
    return env


def run_worker(spec: dict, timeout: float = 900) -> dict:
    """One measurement in a fresh process (numpy's BLAS on as many threads as the row)."""
    result = subprocess.run(
        [sys.executable, "-m", "edge.tools.benchworker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(Path(__file__).resolve().parent.parent),
        env={**os.environ, "OPENBLAS_NUM_THREADS": str(spec["threads"])},
    )
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed: {tail[0][:200]}"}
    data = json.loads(result.stdout.strip().splitlines()[-1])
    placement = {provider: int(n) for provider, n in PLACEMENT_LINE.findall(result.stderr)}
    if placement and "engine" in data:
        engine = data["engine"]
        engine["delegate_nodes"] = {
            "delegate": engine["delegate"] if placement.get(engine["delegate"]) else None,
            "delegated": placement.get(engine["delegate"], 0),
            "total": sum(placement.values()),
            "placement": placement,
        }
    data["status"] = "ok"
    return data


def model_gflop(bundle: Bundle) -> float | None:
    """The network's arithmetic, counted on its smallest TFLite file (every variant is the same network)."""
    have = [b for b in TFLITE_BACKENDS if b in available_backends()]
    files = [v for v in ("int8", "dynamic", "float16", "float32") if v in bundle.variant_names()]
    if not have or not files:
        return None
    engine = open_engine(bundle, have[0], files[0], threads=1, delegate=NO_DELEGATE)
    return engine.flops() / 1e9


def add_floor(row: dict, peaks: list[dict], gflop: float | None) -> str | None:
    """The row's floor: the model's arithmetic at the best float32 rate measured just before and after it.

    Returns a warning when the CPU's speed moved too much around the row for its floor to be trusted.
    """
    rates = [p["gflops"] for p in peaks if p["status"] == "ok"]
    row["cpu_peak_gflops"] = rates
    row["model_gflop"] = gflop
    row["floor_ms"] = gflop / max(rates) * 1e3 if gflop and rates else None
    row["floor_trusted"] = bool(rates) and max(rates) / min(rates) <= PEAK_SPREAD
    if rates and not row["floor_trusted"]:
        return (
            f"the CPU's float32 peak moved from {rates[0]:.0f} to {rates[-1]:.0f} GFLOP/s around the row: "
            "the machine is busy or throttling, its floor ratio is not to be trusted"
        )
    return None


def cold_start(bundle: Path, spec: dict, broker: str) -> float | None:
    """Seconds from starting `python -m edge` to its first classification arriving at a subscriber."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smartbin-coldstart-") as work:
        return _cold_start_in(Path(work), bundle, spec, broker)


def _cold_start_in(work: Path, bundle: Path, spec: dict, broker: str) -> float | None:
    import threading
    import time

    import paho.mqtt.client as mqtt
    import yaml
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = broker.rsplit(":", 1)
    config = {
        "device_id": "coldstart",
        "model": {
            "bundle": str(bundle),
            "backend": spec["backend"],
            "variant": spec["variant"],
            "threads": spec["threads"],
            "delegate": spec["delegate"],
        },
        "source": {"uri": "synthetic://?items=0&present=20&empty=0", "frozen_after_s": 0},
        "presence": {"mode": "always"},
        "mqtt": {"host": host, "port": int(port)},
        "outbox": {"path": str(work / "outbox.sqlite")},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    arrived = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("smartbin/coldstart/classification")
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda *a: arrived.set()
    sub.connect(host, int(port))
    sub.loop_start()
    subscribed.wait(5)
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(work / "config.yaml")],
        stderr=subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    seconds = time.monotonic() - start if arrived.wait(30) else None
    process.terminate()
    process.wait(15)
    sub.disconnect()
    sub.loop_stop()
    return seconds


def compute_ratios(results: list[dict]) -> dict:
    """Variant vs float32 (same backend, threads, mode); pipeline and e2e vs invoke (same variant...)."""
    index = {(r["variant"], r["backend"], r["threads"], r["mode"]): r for r in results if r["status"] == "ok"}
    ratios: dict[str, dict] = {"vs_float32": {}, "vs_invoke": {}, "vs_floor": {}}
    for (variant, backend, threads, mode), r in index.items():
        key = f"{variant}/{backend}/{threads}t/{mode}"
        ref = index.get(("float32", backend, threads, mode))
        if ref and variant != "float32":
            ratios["vs_float32"][key] = {
                "p50_speedup": ref["latency_ms"]["p50"] / r["latency_ms"]["p50"],
                "size_ratio": r["model_mb"] / ref["model_mb"],
            }
        if r.get("floor_ms"):
            ratios["vs_floor"][key] = {"p50_ratio": r["latency_ms"]["p50"] / r["floor_ms"], "floor_ms": r["floor_ms"]}
        base = index.get((variant, backend, threads, "invoke"))
        if base and mode != "invoke":
            ratios["vs_invoke"][key] = {
                "throughput_ratio": r["throughput_fps"] / base["throughput_fps"],
                "p50_added_ms": r["latency_ms"]["p50"] - base["latency_ms"]["p50"],
                "p50_ratio": r["latency_ms"]["p50"] / base["latency_ms"]["p50"],
            }
    return ratios


def _accuracy(bundle: Bundle, variant: str, data: str | None, backend: str, threads: int) -> tuple:
    """top-1 and agreement: measured on --data, else the figures the converter measured at export."""
    if data:
        from edge.tools.accuracy import evaluate_bundle

        figures = evaluate_bundle(bundle.path, data, backend, threads)["variants"][variant]
        return figures["top1"], figures["agreement"]
    gate = bundle.manifest.variants[variant].gate
    return (gate.top1, gate.agreement) if gate else (None, None)


def delegate_ops(row: dict) -> str:
    """'xnnpack 78/81': the delegate and how many of the model's operations it took; 'none' when none."""
    nodes = row.get("engine", {}).get("delegate_nodes")
    if not nodes:
        return ""
    return f"{nodes['delegate']} {nodes['delegated']}/{nodes['total']}" if nodes["delegate"] else "none"


def table(results: list[dict]) -> Table:
    t = Table(title="smartbin bench (latency in ms)")
    for column in (
        "variant",
        "backend",
        "thr",
        "mode",
        "status",
        "MB",
        "load s",
        "first s",
        "p50",
        "p90",
        "p99",
        "mean±std",
        "FPS",
        "RSS peak",
        "delegate ops",
        "top-1",
        "agree",
    ):
        t.add_column(column, justify="left" if column in ("variant", "backend", "mode", "status") else "right")
    for r in results:
        if r["status"] != "ok":
            t.add_row(r["variant"], r["backend"], str(r["threads"]), r["mode"], "failed", *[""] * 12)
            continue
        lat = r["latency_ms"]
        t.add_row(
            r["variant"],
            r["backend"],
            str(r["threads"]),
            r["mode"],
            "ok",
            f"{r['model_mb']:.1f}",
            f"{r['load_s']:.2f}",
            f"{r['first_inference_s']:.3f}",
            f"{lat['p50']:.2f}",
            f"{lat['p90']:.2f}",
            f"{lat['p99']:.2f}",
            f"{lat['mean']:.1f}±{lat['std']:.1f}",
            f"{r['throughput_fps']:.1f}",
            f"{r['rss_peak_mb']:.0f}",
            delegate_ops(r),
            "" if r["top1"] is None else f"{r['top1']:.1%}",
            "" if r["agreement"] is None else f"{r['agreement']:.1%}",
        )
    return t


def markdown(report: dict) -> str:
    lines = [
        "| variant | backend | threads | mode | p50 ms | p90 ms | p99 ms | FPS | RSS peak MB | size MB | x floor "
        "| delegate ops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(
                f"| {r['variant']} | {r['backend']} | {r['threads']} | {r['mode']} | {r['status']} | | | | | | | |"
            )
            continue
        lat = r["latency_ms"]
        floor = f"{lat['p50'] / r['floor_ms']:.2f}" if r.get("floor_ms") else ""
        lines.append(
            f"| {r['variant']} | {r['backend']} | {r['threads']} | {r['mode']} | {lat['p50']:.1f} | "
            f"{lat['p90']:.1f} | {lat['p99']:.1f} | {r['throughput_fps']:.1f} | {r['rss_peak_mb']:.0f} | "
            f"{r['model_mb']:.1f} | {floor} | {delegate_ops(r)} |"
        )
    env = report["environment"]
    lines.append(f"\n{env['cpu']}, {env['cores']} cores, {env['machine']}, Python {env['python']}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    labels = [f"{r['variant']}\n{r['backend']}\n{r['threads']}t {r['mode']}" for r in rows]
    ax.boxplot([[r["latency_ms"][k] for k in ("min", "p50", "p90", "p99", "max")] for r in rows], whis=(0, 100))
    ax.set_xticks(range(1, len(rows) + 1), labels, fontsize=7)
    ax.set_ylabel("latency ms (min, p50, p90, p99, max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edge/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--variants", default="all", help="all or a list: int8,float32,float16,dynamic,onnx,onnx_int8")
    p.add_argument("--backends", default="auto", help="auto or a list: litert,tflite_runtime,tensorflow,onnxruntime")
    p.add_argument("--threads", default=str(min(4, os.cpu_count() or 1)), help="list, e.g. 1,2,4")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--modes", default="invoke,pipeline,e2e")
    p.add_argument("--delegate", help="TFLite delegate library or ONNX provider (none: plain CPU kernels)")
    p.add_argument("--broker", help="HOST:PORT for e2e (default: start a local one)")
    p.add_argument("--data", help="dataset for top-1 and agreement (default: the figures in the manifest)")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--markdown", help="write a Markdown table")
    p.add_argument("--plot", help="write a PNG of latency distributions")
    return p.parse_args(argv)


def plan(bundle: Bundle, args: argparse.Namespace) -> list[dict]:
    variants = bundle.variant_names() if args.variants == "all" else args.variants.split(",")
    have = available_backends()
    backends = args.backends.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in ("invoke", "pipeline", "e2e")]
    if unknown:
        raise SmartbinError(f"--modes: unknown {', '.join(unknown)} (allowed: invoke, pipeline, e2e)")
    planned = []
    for variant in variants:
        if variant not in bundle.variant_names():
            raise SmartbinError(
                f"--variants: {variant!r} is not in {bundle.path} ({', '.join(bundle.variant_names())})"
            )
        for backend in backends:
            if backend in BACKENDS and not runs(backend, variant):
                continue  # a list of backends: each variant runs on the ones that can run it
            backend = backend_for(variant, backend, have)  # auto resolved; unknown or none installed: an error
            for t in threads:
                for mode in modes:
                    e2e_rates = [0, 30] if mode == "e2e" else [0]
                    for fps in e2e_rates:
                        planned.append(
                            {
                                "variant": variant,
                                "backend": backend,
                                "threads": t,
                                "mode": mode if not fps else f"e2e@{fps}fps",
                                "fps": fps,
                            }
                        )
    return planned


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bundle = Bundle.open(args.bundle)
        bundle.verify()
        planned = plan(bundle, args)
    except SmartbinError as exc:
        console.print(f"bench: error: {exc}")
        return 2
    env = environment()
    for warning in env["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    len_warnings = len(env["warnings"])
    broker = None
    if any(r["mode"].startswith("e2e") for r in planned) and not args.broker:
        from edge.tools.localbroker import LocalBroker

        broker = LocalBroker(persistence=False).start()
        args.broker = f"127.0.0.1:{broker.port}"
    gflop = model_gflop(bundle) if any(r["mode"] == "invoke" for r in planned) else None
    results = []
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("benchmarking", total=len(planned))
            for run in planned:
                progress.update(task, description=f"{run['variant']} {run['backend']} {run['threads']}t {run['mode']}")
                spec = {
                    **run,
                    "mode": "e2e" if run["mode"].startswith("e2e") else run["mode"],
                    "bundle": str(bundle.path),
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "broker": args.broker,
                    "delegate": args.delegate,
                }
                try:
                    if run["mode"] == "invoke":  # bracketed by the CPU's peak rate, for its floor
                        peak = {"mode": "peak", "threads": run["threads"]}
                        before = run_worker(peak)
                        data = run_worker(spec)
                        shaky = add_floor(data, [before, run_worker(peak)], gflop)
                        if shaky:
                            env["warnings"].append(f"{run['variant']}/{run['backend']}/{run['threads']}t: {shaky}")
                    else:
                        data = run_worker(spec)
                    if run["mode"] == "e2e" and data["status"] == "ok":
                        data["cold_start_s"] = cold_start(bundle.path, spec, args.broker)
                except subprocess.TimeoutExpired:
                    data = {"status": "failed: timed out"}
                entry = bundle.manifest.variants[run["variant"]]
                top1, agreement = _accuracy(bundle, run["variant"], args.data, run["backend"], run["threads"])
                results.append(
                    {
                        "variant": run["variant"],
                        "backend": run["backend"],
                        "threads": run["threads"],
                        "mode": run["mode"],
                        "model_mb": entry.size / 1e6,
                        "top1": top1,
                        "agreement": agreement,
                        **data,
                    }
                )
                progress.advance(task)
    finally:
        if broker:
            broker.close()
    report = {"environment": env, "results": results, "ratios": compute_ratios(results)}
    Console(width=None if sys.stdout.isatty() else 200).print(table(results))
    for r in results:
        if r["status"] != "ok":
            console.print(f"[red]{r['variant']} {r['backend']} {r['threads']}t {r['mode']}: {r['status']}")
    for key, r in report["ratios"]["vs_invoke"].items():
        console.print(f"{key}: throughput {r['throughput_ratio']:.3f}x invoke, p50 +{r['p50_added_ms']:.2f} ms")
    for r in results:
        if r["status"] == "ok" and r["mode"] == "pipeline":
            console.print(
                f"{r['variant']}/{r['backend']}/{r['threads']}t/pipeline: throughput "
                f"{r['interleaved']['ratio']:.3f}x bare invoke, measured interleaved in one process"
            )
        if r["status"] == "ok" and r["mode"].startswith("e2e"):
            console.print(
                f"{r['variant']}/{r['backend']}/{r['threads']}t/{r['mode']}: capture -> subscriber p50 "
                f"{r['latency_ms']['p50']:.2f} ms, of which outside inference "
                f"{r['stages_ms']['outside_inference']:.2f} ms"
            )
        if r.get("cold_start_s"):
            console.print(
                f"cold start {r['variant']}/{r['backend']}/{r['threads']}t: process start -> first "
                f"classification at a subscriber {r['cold_start_s']:.2f} s"
            )
    for key, r in report["ratios"]["vs_floor"].items():
        console.print(
            f"{key}: p50 {r['p50_ratio']:.2f}x the floor of {r['floor_ms']:.1f} ms ({gflop:.2f} GFLOP at the best "
            "float32 rate numpy's BLAS reached on as many threads just before and after the row)"
        )
    for r in results:
        nodes = r.get("engine", {}).get("delegate_nodes")
        if r["mode"] == "invoke" and nodes:
            where = (
                f"delegate {nodes['delegate']} took {nodes['delegated']} of {nodes['total']} operations"
                if nodes["delegate"]
                else f"no delegate: all {nodes['total']} operations on plain CPU kernels"
            )
            console.print(f"{r['variant']}/{r['backend']}/{r['threads']}t: {where}")
    for warning in env["warnings"][len_warnings:]:
        console.print(f"[yellow]warning: {warning}")
    for key, r in report["ratios"]["vs_float32"].items():
        console.print(f"{key}: {r['p50_speedup']:.2f}x float32 speed, {r['size_ratio']:.2f}x its size")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    if args.plot:
        plot(report, args.plot)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
