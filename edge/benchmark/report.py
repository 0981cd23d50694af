"""What edge/bench.py prints and writes: the machine it ran on, the table, the ratios, Markdown and a plot."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.benchmark import textui
from edge.system.cpu import cpu_flags, cpu_model, read_cpuinfo
from edge.system.versions import installed_versions

LIBRARIES = ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime", "onnxruntime", "paho-mqtt")
# The instruction sets that decide the figures: printed with every run (the CPU behind a VM changes).
ISA_FLAGS = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512fp16", "asimd", "asimdhp", "asimddp", "i8mm", "sve")  # fmt: skip


DAEMON_COST_GOAL_MS = 1.5  # e2e at 30 fps minus the frame's own inference, per frame (p50)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def environment() -> dict:
    """What the figures depend on, and warnings when the machine looks busy or throttled."""
    cpuinfo = read_cpuinfo()
    model = cpu_model(cpuinfo)
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
        "instruction_sets": sorted(set(ISA_FLAGS) & cpu_flags(cpuinfo)),
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


def delegate_ops(row: dict) -> str:
    """'xnnpack 78/81': the delegate and how many of the model's operations it took; 'none' when none."""
    nodes = row.get("engine", {}).get("delegate_nodes")
    if not nodes:
        return ""
    return f"{nodes['delegate']} {nodes['delegated']}/{nodes['total']}" if nodes["delegate"] else "none"


def table(results: list[dict]) -> Any:
    t = textui.table("smartbin bench (latency in ms)")
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
    isa = ", ".join(env["instruction_sets"]) or "?"
    lines.append(f"\n{env['cpu']}, {env['cores']} cores, {env['machine']} ({isa}), Python {env['python']}")
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


def e2e_line(r: dict) -> str:
    """An e2e row's figures: latency, the daemon's own cost against its goal (at 30 fps), RSS, the loop's stages."""
    stages = r["stages_ms"]
    loop = ", ".join(f"{k[5:]} {v:.2f}" for k, v in stages.items() if k.startswith("loop_"))
    outside = stages["outside_inference"]
    met = "met" if outside <= DAEMON_COST_GOAL_MS else "NOT met"
    goal = f" (goal ≤ {DAEMON_COST_GOAL_MS} ms: {met})" if r["mode"] == "e2e@30fps" else ""
    return (
        f"capture -> subscriber p50 {r['latency_ms']['p50']:.2f} ms, outside inference {outside:.2f} ms{goal}, "
        f"daemon RSS peak {r['rss_peak_mb']:.0f} MB; in the loop (p50 ms): {loop}; publish -> arrival "
        f"{stages['publish_to_arrival']:.2f} ms"
    )


def print_summary(report: dict, console: Any, new_warnings: list[str]) -> None:
    """The table, then one line per figure that matters: ratios, the loop's stages, floors, delegates."""
    results = report["results"]
    textui.console(width=None if sys.stdout.isatty() else 200).print(table(results))
    env = report["environment"]
    console.print(f"{env['cpu']}, {env['cores']} cores, instruction sets: {', '.join(env['instruction_sets']) or '?'}")
    for r in results:
        if r["status"] != "ok":
            console.print(f"[red]{r['variant']} {r['backend']} {r['threads']}t {r['mode']}: {r['status']}")
    for key, r in report["ratios"]["vs_invoke"].items():
        console.print(
            f"{key}: throughput {r['throughput_ratio']:.3f}x {r['base']}, "
            f"p50 {r['p50_added_ms']:+.2f} ms vs {r['base']}"
        )
    for r in results:
        name = f"{r['variant']}/{r['backend']}/{r['threads']}t/{r['mode']}"
        if r["status"] == "ok" and r["mode"] == "pipeline":
            console.print(
                f"{name}: throughput {r['interleaved']['ratio']:.3f}x bare invoke, interleaved in one process"
            )
        if r["status"] == "ok" and r["mode"] == "shadow":
            sh = r["shadow"]
            console.print(
                f"{name}: a model in the shadow adds {sh['added_ms_per_frame']:+.2f} ms a frame "
                f"({sh['alone_p50_ms']:.2f} -> {sh['with_shadow_p50_ms']:.2f} ms p50), "
                f"{sh['added_ms_per_item']:+.2f} ms an item of {sh['frames_per_item']} frames, "
                f"{sh['rss_added_mb']:+.1f} MB resident"
            )
        if r["status"] == "ok" and r["mode"].startswith("e2e"):
            console.print(f"{name}: {e2e_line(r)}")
        if r.get("cold_start_s"):
            console.print(
                f"{name}: cold start, process start -> first classification at a subscriber {r['cold_start_s']:.2f} s"
            )
    for key, r in report["ratios"]["vs_floor"].items():
        console.print(
            f"{key}: p50 {r['p50_ratio']:.2f}x its floor of {r['floor_ms']:.2f} ms ({r['basis']}); "
            f"library on plain matrix products: {r['probe_gops'] or 0:.0f} GOP/s, nominal {r['nominal_gops'] or 0:.0f}"
        )
    for r in results:
        if r["mode"] == "invoke" and r.get("nominal_peak"):
            console.print(f"  nominal peak {r['nominal_peak']['explain']}")
        nodes = r.get("engine", {}).get("delegate_nodes")
        if r["mode"] == "invoke" and nodes:
            where = (
                f"delegate {nodes['delegate']} took {nodes['delegated']} of {nodes['total']} operations"
                if nodes["delegate"]
                else f"no delegate: all {nodes['total']} operations on plain CPU kernels"
            )
            console.print(f"{r['variant']}/{r['backend']}/{r['threads']}t: {where}")
    for warning in new_warnings:
        console.print(f"[yellow]warning: {warning}")
    for key, r in report["ratios"]["vs_float32"].items():
        console.print(f"{key}: {r['p50_speedup']:.2f}x {r['base']}'s speed (p50), {r['size_ratio']:.2f}x its size")
