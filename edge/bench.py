"""`python edge/bench.py` (also `smartbin bench`): latency of the model and of the whole bin.

Several bundles (``--bundle`` given again) are measured in one run, their rows named after the
bundle's folder: e.g. a mixed-precision int8 beside the full-integer one converted with
``--no-mixed-precision --allow-accuracy-drop``.

Each (variant, backend, threads, mode) runs in a fresh process (edge/benchmark/worker.py) so that
load time and peak memory are its own; ratios are computed from figures measured in this run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python edge/bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.benchmark import textui
from edge.benchmark.peak import nominal_peak, variant_dtype
from edge.benchmark.report import environment, markdown, plot, print_summary
from edge.benchmark.worker import private_state
from edge.errors import SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.variants import BY_NAME, TFLITE_VARIANTS, VARIANT_FILES
from edge.runtime import (
    BACKENDS,
    TFLITE_BACKENDS,
    available_backends,
    backend_for,
    default_threads,
    open_engine,
    runs,
)
from edge.runtime.base import NO_DELEGATE
from edge.wire.topics import DEFAULT_PREFIX, Topic, device_topic

COLDSTART_ID = "coldstart"  # the device id of the cold-start run's daemon

console = textui.console(stderr=True, width=None if sys.stderr.isatty() else 160)
PLACEMENT_LINE = re.compile(r"(?:All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)")
PEAK_SPREAD = 1.15  # probe rate before vs after an invoke row beyond which its floor ratio is not trusted


def run_worker(spec: dict, timeout: float = 900) -> dict:
    """One measurement in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "edge.benchmark.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(Path(__file__).resolve().parent.parent),
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
    files = [v for v in reversed(TFLITE_VARIANTS) if v in bundle.variant_names()]  # int8 is the smallest
    if not have or not files:
        return None
    engine = open_engine(bundle, have[0], files[0], threads=1, delegate=NO_DELEGATE)
    return engine.flops() / 1e9


def probe_name(backend: str, variant: str) -> str:
    """The bundle's peak probe for a row: same library format, same arithmetic (float16 runs as float32 there)."""
    dtype = "int8" if variant_dtype(variant) == "int8" else "float32"
    return f"{'onnx' if backend == 'onnxruntime' else 'tflite'}_{dtype}"


def add_floor(row: dict, variant: str, threads: int, probes: list[dict], gflop: float | None) -> list[str]:
    """The row's floor: the model's arithmetic at the larger of the hardware's nominal peak for its data type
    and the library's measured rate on plain matrix products (measured just before and after the row).

    Returns warnings: a probe rate that moved around the row, or a row faster than its floor.
    """
    nominal = nominal_peak(variant_dtype(variant), threads)
    rates = [p["gops"] for p in probes if p["status"] == "ok" and p.get("gops")]
    row["nominal_peak"] = {"gops": nominal.gops, "explain": nominal.explain()}
    row["probe_gops"] = rates
    row["model_gflop"] = gflop
    best = max([nominal.gops or 0.0, *rates])
    row["floor_ms"] = gflop / best * 1e3 if gflop and best else None
    row["floor_basis"] = "nominal peak" if (nominal.gops or 0) >= max(rates, default=0) else "measured probe"
    warnings = []
    if rates and max(rates) / min(rates) > PEAK_SPREAD:
        warnings.append(
            f"the library's rate on matrix products moved from {rates[0]:.0f} to {rates[-1]:.0f} GOP/s around "
            "the row: the machine is busy or throttling, its floor ratio is not to be trusted"
        )
    if row["floor_ms"] and row.get("latency_ms") and row["latency_ms"]["p50"] < row["floor_ms"]:
        warnings.append(
            f"p50 {row['latency_ms']['p50']:.2f} ms beats the floor of {row['floor_ms']:.2f} ms: a bug in the floor "
            f"(the assumptions of {nominal.explain()} do not hold on this CPU)"
        )
    return warnings


def cold_start(bundle: Path, spec: dict, broker: str) -> float | None:
    """Seconds from starting `python -m edge` to its first classification arriving at a subscriber."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smartbin-coldstart-") as work:
        return _cold_start_in(Path(work), bundle, spec, broker)


def _cold_start_in(work: Path, bundle: Path, spec: dict, broker: str) -> float | None:
    import threading
    import time

    import yaml

    from edge.broker.client import make_client
    from edge.config import MqttConfig

    host, port = broker.rsplit(":", 1)
    config = {
        "device_id": COLDSTART_ID,
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
        **private_state(work),
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    arrived = threading.Event()
    sub = make_client(MqttConfig(host=host, port=int(port)), f"smartbin-bench-{os.getpid()}")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(
        device_topic(DEFAULT_PREFIX, COLDSTART_ID, Topic.CLASSIFICATION)
    )
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


def float_reference(label: str) -> str:
    """The row a variant's speed is held against: its bundle's float32 (onnx for onnx_int8: the same format
    and backend); ``label`` is the variant, with `` (bundle)`` when several bundles are measured."""
    variant, _, bundle = label.partition(" ")
    return " ".join(filter(None, (BY_NAME[variant].float_reference if variant in BY_NAME else "float32", bundle)))


def compute_ratios(results: list[dict]) -> dict:
    """Variant vs its float reference (same bundle, backend, threads, mode); pipeline and e2e vs the invoke
    paced the same way; invoke vs its floor."""
    index = {(r["variant"], r["backend"], r["threads"], r["mode"]): r for r in results if r["status"] == "ok"}
    ratios: dict[str, dict] = {"vs_float32": {}, "vs_invoke": {}, "vs_floor": {}}
    for (variant, backend, threads, mode), r in index.items():
        key = f"{variant}/{backend}/{threads}t/{mode}"
        ref = index.get((float_reference(variant), backend, threads, mode))
        if ref and ref is not r:
            ratios["vs_float32"][key] = {
                "base": ref["variant"],
                "p50_speedup": ref["latency_ms"]["p50"] / r["latency_ms"]["p50"],
                "size_ratio": r["model_mb"] / ref["model_mb"],
            }
        if r.get("floor_ms"):
            ratios["vs_floor"][key] = {
                "p50_ratio": r["latency_ms"]["p50"] / r["floor_ms"],
                "floor_ms": r["floor_ms"],
                "basis": r["floor_basis"],
                "probe_gops": max(r["probe_gops"], default=None),
                "nominal_gops": r["nominal_peak"]["gops"],
            }
        paced = mode.partition("@")[2]  # e2e@30fps is held against invoke@30fps where that row exists
        base_mode = f"invoke@{paced}" if paced and (variant, backend, threads, f"invoke@{paced}") in index else "invoke"
        base = index.get((variant, backend, threads, base_mode))
        if base and not mode.startswith("invoke"):
            ratios["vs_invoke"][key] = {
                "base": base_mode,
                "throughput_ratio": r["throughput_fps"] / base["throughput_fps"],
                "p50_added_ms": r["latency_ms"]["p50"] - base["latency_ms"]["p50"],
                "p50_ratio": r["latency_ms"]["p50"] / base["latency_ms"]["p50"],
            }
    return ratios


def _accuracy(bundle: Bundle, variant: str, data: str | None, backend: str, threads: int) -> tuple:
    """top-1 and agreement: measured on --data, else the figures the converter measured at export."""
    if data:
        from edge.benchmark.accuracy import evaluate_bundle

        figures = evaluate_bundle(bundle.path, data, backend, threads)["variants"][variant]
        return figures["top1"], figures["agreement"]
    gate = bundle.manifest.variants[variant].gate
    return (gate.top1, gate.agreement) if gate else (None, None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edge/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle", required=True, action="append", help="a bundle folder; again to compare bundles in one run"
    )
    p.add_argument("--variants", default="all", help=f"all or a list: {','.join(VARIANT_FILES)}")
    p.add_argument("--backends", default="auto", help="auto or a list: litert,tflite_runtime,tensorflow,onnxruntime")
    p.add_argument(
        "--threads",
        default=str(min(4, os.cpu_count() or 1)),
        help="list, e.g. 1,2,4; auto: the daemon's default (every core, up to 4)",
    )
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


def plan(bundle: Bundle, args: argparse.Namespace, missing_ok: bool = False) -> list[dict]:
    """The rows to measure for one bundle; ``missing_ok``: a listed variant the bundle lacks is skipped."""
    variants = bundle.variant_names() if args.variants == "all" else args.variants.split(",")
    if missing_ok:
        variants = [v for v in variants if v in bundle.variant_names()]
    have = available_backends()
    backends = args.backends.split(",")
    try:
        threads = [default_threads() if t == "auto" else int(t) for t in args.threads.split(",")]
    except ValueError:
        raise SmartbinError(f"--threads: {args.threads!r} is not a list of numbers or auto") from None
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in ("invoke", "pipeline", "e2e", "shadow")]
    if unknown:
        raise SmartbinError(f"--modes: unknown {', '.join(unknown)} (allowed: invoke, pipeline, e2e, shadow)")
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
                    # at 30 fps the e2e row is held against an invoke paced the same way (a pool that sleeps)
                    rates = [0, 30] if mode == "e2e" or (mode == "invoke" and "e2e" in modes) else [0]
                    for fps in rates:
                        planned.append(
                            {
                                "variant": variant,
                                "bundle": bundle,
                                "backend": backend,
                                "threads": t,
                                "mode": mode if not fps else f"{mode}@{fps}fps",
                                "fps": fps,
                            }
                        )
    return planned


def _planned(args) -> tuple[list[Bundle], list[dict]]:
    """The bundles, verified, and the rows to measure; SmartbinError when nothing can be."""
    if args.plot and importlib.util.find_spec("matplotlib") is None:  # found out before minutes of measuring
        raise SmartbinError(
            "--plot needs matplotlib, which the workstation has and a device does not: "
            "pip install matplotlib, or plot the --json report on the workstation"
        )
    bundles = [Bundle.open(path) for path in args.bundle]
    planned = []
    for bundle in bundles:
        bundle.verify()
        planned += plan(bundle, args, missing_ok=len(bundles) > 1)
    if not planned:
        raise SmartbinError(f"--variants: none of {args.variants} is in any of the bundles")
    return bundles, planned


def _measure(run: dict, bundle: Bundle, label: str, args, env: dict, gflop: float | None) -> dict:
    """One row: the worker's figures (invoke rows bracketed by the library's peak probe, e2e rows with a
    cold start), the variant's size and accuracy."""
    spec = {
        **run,
        "mode": run["mode"].partition("@")[0],
        "bundle": str(bundle.path),
        "runs": args.runs,
        "warmup": args.warmup,
        "broker": args.broker,
        "delegate": args.delegate,
    }
    try:
        if run["mode"] == "invoke":  # bracketed by the library's rate on matrix products, for its floor
            probe = {**spec, "mode": "probe", "probe": probe_name(run["backend"], run["variant"])}
            before = run_worker(probe)
            data = run_worker(spec)
            name = f"{label}/{run['backend']}/{run['threads']}t"
            for warning in add_floor(data, run["variant"], run["threads"], [before, run_worker(probe)], gflop):
                env["warnings"].append(f"{name}: {warning}")
        else:
            data = run_worker(spec)
        if run["mode"] == "e2e" and data["status"] == "ok":
            data["cold_start_s"] = cold_start(bundle.path, spec, args.broker)
    except subprocess.TimeoutExpired:
        data = {"status": "failed: timed out"}
    top1, agreement = _accuracy(bundle, run["variant"], args.data, run["backend"], run["threads"])
    return {
        "variant": label,
        "backend": run["backend"],
        "threads": run["threads"],
        "mode": run["mode"],
        "model_mb": bundle.manifest.variants[run["variant"]].size / 1e6,
        "top1": top1,
        "agreement": agreement,
        **data,
    }


def main(argv: list[str] | None = None) -> int:
    """`python edge/bench.py`: measure every planned row, print the summary, write the reports asked for."""
    args = parse_args(argv)
    try:
        bundles, planned = _planned(args)
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
    gflop = {b.path: model_gflop(b) for b in bundles} if any(r["mode"] == "invoke" for r in planned) else {}
    results = []
    try:
        with textui.progress(console) as progress:
            task = progress.add_task("benchmarking", total=len(planned))
            for run in planned:
                bundle = run.pop("bundle")
                # with several bundles a row is named by variant and bundle: "int8 (mixed)"
                label = run["variant"] if len(bundles) == 1 else f"{run['variant']} ({bundle.path.name})"
                progress.update(task, description=f"{label} {run['backend']} {run['threads']}t {run['mode']}")
                results.append(_measure(run, bundle, label, args, env, gflop.get(bundle.path)))
                progress.advance(task)
    finally:
        if broker:
            broker.close()
    report = {"environment": env, "results": results, "ratios": compute_ratios(results)}
    print_summary(report, console, env["warnings"][len_warnings:])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    if args.plot:
        plot(report, args.plot)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
