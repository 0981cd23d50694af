"""`smartbin demo`: the whole path on this machine, offline, in a few minutes.

synthetic dataset -> train -> convert (with accuracy gates) -> broker -> the daemon on a clip
of items being dropped -> a subscriber printing each decision as the bin receives it (and
answering, as an operator, what each item was) -> the fleet loop (samples pulled, v2 retrained,
updated over HTTP, v3 rolled back) -> benchmark table.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from rich.console import Console

from convert.cli import main as smartbin
from convert.demo_fleet import loop_config, retrain, run_loop
from edge.paths import firmware_config_dir
from edge.sources.synthetic import SyntheticSource, write_clip
from edge.tools.localbroker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=None if sys.stdout.isatty() else 120)

CLASSES, PER_CLASS, IMG_SIZE, ITEMS = 6, 24, 64, 6


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def run_demo(out: Path, bench_runs: int = 50) -> int:
    out = out.resolve()  # the daemon's config resolves relative paths from its own folder
    out.mkdir(parents=True, exist_ok=True)
    data, run, bundle = out / "data", out / "run", out / "bundle"
    started = time.monotonic()

    step(f"1. synthetic dataset: {CLASSES} classes x {PER_CLASS} images, garbage_classify_v2 format")
    smartbin(
        [
            "dataset",
            "synth",
            "--out",
            str(data),
            "--classes",
            str(CLASSES),
            "--per-class",
            str(PER_CLASS),
            "--size",
            "80",
        ]
    )
    smartbin(["dataset", "check", str(data)])

    step(f"2. train ResNet50 at {IMG_SIZE} px (users train at 224 with --weights imagenet)")
    from convert.model import write_stand_in_weights

    # No network here: a seeded random backbone file stands in for the ImageNet weights file.
    weights = write_stand_in_weights(out / "resnet50_notop.weights.h5", IMG_SIZE)
    code = smartbin(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--weights",
            str(weights),
            "--img-size",
            str(IMG_SIZE),
            "--epochs",
            "20",
            "--val-fraction",
            "0.25",
        ]
    )
    if code:
        return code

    step("3. convert: float32, float16, dynamic, int8 TFLite and ONNX, each through its accuracy gate")
    code = smartbin(["convert", str(run), "--out", str(bundle), "--onnx", "--calib-samples", "200"])
    if code:
        return code

    step(f"4. broker, and the daemon on a clip of {ITEMS} items dropped into the bin")
    source = SyntheticSource("synthetic://", classes=CLASSES, items=ITEMS, empty=8, present=10, seed=7)
    clip = out / "items.avi"
    write_clip(str(clip), source, fps=15)
    labels = {e["index"]: e for e in json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["labels"]}
    expected = source.schedule[:ITEMS]
    config = yaml.safe_load((firmware_config_dir() / "x86-dev.yaml").read_text(encoding="utf-8"))
    with LocalBroker(workdir=out / "broker") as broker:
        console.print(f"broker: {broker.kind} on 127.0.0.1:{broker.port}")
        config["device_id"] = "demo-bin"
        config["model"].update(bundle=str(bundle), threads="auto")
        config["source"].update(uri=f"file://{clip}?realtime=1", frozen_after_s=0, roi=None)
        config["mqtt"].update(host="127.0.0.1", port=broker.port, metrics_interval_s=2)
        config["outbox"]["path"] = str(out / "outbox.sqlite")
        # the demo keeps every decision's frame (a bin keeps the doubtful ones and 2 % of the rest)
        config["samples"] = {"path": str(out / "samples"), "confident_fraction": 1.0}
        config["counters"] = {"path": str(out / "counters.sqlite")}
        config["updates"] = {"store": str(out / "models")}
        config_path = out / "demo-bin.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        decisions = watch_daemon(config_path, broker.port, labels, expected)

        matched = sum(d["label_index"] == e for d, e in zip(decisions, expected))
        console.print(
            f"\n{ITEMS} items dropped, {len(decisions)} decisions received, {matched} sorted into the "
            f"expected bin and class; the operator's answers are kept beside the samples"
        )

        step("5. the fleet loop: samples -> corrections -> retrain v2 -> update over HTTP -> a rollback")
        v2 = retrain(out, data, out / "samples", weights, IMG_SIZE, console)
        looped = v2 is not None and run_loop(out, loop_config(config_path, clip, out), broker.port, v2, console)
        if not looped:
            console.print("[red]the fleet loop did not complete")

    step("6. benchmark (python edge/bench.py)")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "edge" / "bench.py"),
            "--bundle",
            str(bundle),
            "--variants",
            "int8,float32,onnx,onnx_int8",
            "--threads",
            "auto",
            "--runs",
            str(bench_runs),
            "--warmup",
            "5",
            "--json",
            str(out / "bench.json"),
            "--markdown",
            str(out / "bench.md"),
        ],
        check=False,
    )
    console.print(f"\ndemo finished in {time.monotonic() - started:.0f} s; everything it wrote is in {out}/")
    return 0 if len(decisions) == ITEMS and looped else 1


def watch_daemon(config_path: Path, port: int, labels: dict, expected: list[int]) -> list[dict]:
    """Start the daemon, print decisions as a subscriber receives them, stop it when the clip ends."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    decisions: list[dict] = []
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(client, userdata, message):
        if message.topic.endswith("/decision"):
            d = json.loads(message.payload)
            with lock:
                if d["event_id"] in seen:  # de-duplicate, as every subscriber must
                    return
                seen.add(d["event_id"])
                decisions.append(d)
                n = len(decisions)
            want = labels[expected[n - 1]] if n <= len(expected) else None
            if want:  # the operator says what the item really was (the status page's "correct…" button)
                correction = {
                    "id": f"correct-{n}",
                    "action": "correct",
                    "event_id": d["event_id"],
                    "label": want["name"],
                }
                client.publish("smartbin/demo-bin/command", json.dumps(correction), qos=1)
            hint = f"(dropped: {want['name']} -> {want['bin']})" if want else ""
            console.print(
                f"  item {n}: [bold]{d['bin']}[/bold] <- {d['label']} ({d['confidence']:.0%}, "
                f"{d['votes']}/{d['frames']} votes) {hint}"
            )
        elif message.topic.endswith("/status"):
            console.print(f"  status: {json.loads(message.payload)['state']}")

    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("smartbin/demo-bin/#", qos=1)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    time.sleep(0.5)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config_path)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        daemon.wait(timeout=120)
    except subprocess.TimeoutExpired:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    return decisions
