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

from convert.demo.fleet import loop_config, retrain, run_loop
from convert.training.backbones import SMALL_BACKBONE
from edge.cli import main as smartbin
from edge.config import load_config
from edge.errors import SmartbinError
from edge.sources.synthetic import SyntheticSource, write_clip
from edge.system.paths import firmware_config_dir
from edge.tools.localbroker import LocalBroker
from edge.wire.payloads import Command, Decision, Status
from edge.wire.topics import Topic, all_of, topic_of, under

ROOT = Path(__file__).resolve().parents[2]
console = Console(width=None if sys.stdout.isatty() else 120)

CLASSES, PER_CLASS, IMG_SIZE, ITEMS = 6, 24, 64, 6


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def must(args: list[str], what: str) -> None:
    """Run one `smartbin` command of the demo; a failure stops the demo, saying which step and command."""
    code = smartbin(args)
    if code:
        raise SmartbinError(f"demo: {what} failed: `smartbin {' '.join(args)}` exited {code}")


def make_data(data: Path) -> None:
    step(f"1. synthetic dataset: {CLASSES} classes x {PER_CLASS} images, garbage_classify_v2 format")
    must(
        ["dataset", "synth", "--out", str(data), "--classes", str(CLASSES), "--per-class", str(PER_CLASS)]
        + ["--size", "80"],
        "making the dataset",
    )
    must(["dataset", "check", str(data)], "checking the dataset")


def train_and_convert(out: Path, data: Path, run: Path, bundle: Path, backbone: str) -> Path:
    """Steps 2 and 3; the stand-in backbone weights file (the fleet loop retrains from it)."""
    step(f"2. train {backbone} at {IMG_SIZE} px (users train ResNet50 at 224 px with --weights imagenet)")
    from convert.training.model import write_stand_in_weights

    # No network here: a seeded random backbone file stands in for the ImageNet weights file.
    weights = write_stand_in_weights(out / f"{backbone}_notop.weights.h5", IMG_SIZE, backbone)
    train = ["train", "--data", str(data), "--out", str(run), "--weights", str(weights), "--backbone", backbone]
    must([*train, "--img-size", str(IMG_SIZE), "--epochs", "20", "--val-fraction", "0.25"], "training")
    step("3. convert: float32, float16, dynamic, int8 TFLite and ONNX, each through its accuracy gate")
    must(["convert", str(run), "--out", str(bundle), "--onnx", "--calib-samples", "200"], "converting")
    return weights


def daemon_config(out: Path, bundle: Path, clip: Path, port: int) -> Path:
    """The x86 dev config pointed at the demo's bundle, clip, broker and folders."""
    config = load_config(firmware_config_dir() / "x86-dev.yaml").model_dump(mode="json")  # every setting
    config["device_id"] = "demo-bin"
    config["model"].update(bundle=str(bundle), threads="auto")
    config["source"].update(uri=f"file://{clip}?realtime=1", frozen_after_s=0, roi=None)
    config["mqtt"].update(host="127.0.0.1", port=port, metrics_interval_s=2)
    config["outbox"]["path"] = str(out / "outbox.sqlite")
    # the demo keeps every decision's frame (a bin keeps the doubtful ones and 2 % of the rest)
    config["samples"] = {"path": str(out / "samples"), "confident_fraction": 1.0}
    config["counters"] = {"path": str(out / "counters.sqlite")}
    config["updates"] = {"store": str(out / "models")}
    path = out / "demo-bin.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def bench(out: Path, bundle: Path, runs: int) -> None:
    step("6. benchmark (python edge/bench.py)")
    command = [sys.executable, str(ROOT / "edge" / "bench.py"), "--bundle", str(bundle)]
    command += ["--variants", "int8,float32,onnx,onnx_int8", "--threads", "auto", "--runs", str(runs)]
    command += ["--warmup", "5", "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")]
    code = subprocess.run(command, check=False).returncode
    if code:
        raise SmartbinError(f"demo: the benchmark failed: `{' '.join(command)}` exited {code}")


def run_demo(out: Path, bench_runs: int = 50, backbone: str = SMALL_BACKBONE) -> int:
    """The whole path on this machine; 0 when every step did what it shows. ``backbone``: the small ResNet
    keeps the demo to minutes on 2 cores; resnet50 shows the same path with the users' network."""
    out = out.resolve()  # the daemon's config resolves relative paths from its own folder
    out.mkdir(parents=True, exist_ok=True)
    data, run, bundle = out / "data", out / "run", out / "bundle"
    started = time.monotonic()
    make_data(data)
    weights = train_and_convert(out, data, run, bundle, backbone)

    step(f"4. broker, and the daemon on a clip of {ITEMS} items dropped into the bin")
    source = SyntheticSource("synthetic://", classes=CLASSES, items=ITEMS, empty=8, present=10, seed=7)
    clip = out / "items.avi"
    write_clip(str(clip), source, fps=15)
    labels = {e["index"]: e for e in json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["labels"]}
    expected = source.schedule[:ITEMS]
    with LocalBroker(workdir=out / "broker") as broker:
        console.print(f"broker: {broker.kind} on 127.0.0.1:{broker.port}")
        config_path = daemon_config(out, bundle, clip, broker.port)
        decisions = watch_daemon(config_path, broker.port, labels, expected, out / "daemon.log")
        matched = sum(d.label_index == e for d, e in zip(decisions, expected))
        console.print(
            f"\n{ITEMS} items dropped, {len(decisions)} decisions received, {matched} sorted into the "
            f"expected bin and class; the operator's answers are kept beside the samples"
        )
        if len(decisions) != ITEMS:
            raise SmartbinError(f"demo: {len(decisions)} decisions for {ITEMS} items (the daemon's log is above)")

        step("5. the fleet loop: samples -> corrections -> retrain v2 -> update over HTTP -> a rollback")
        v2 = retrain(out, data, out / "samples", weights, IMG_SIZE, backbone, console)
        if v2 is None or not run_loop(out, loop_config(config_path, clip, out), broker.port, v2, console):
            raise SmartbinError("demo: the fleet loop did not complete (what failed is printed above)")
    bench(out, bundle, bench_runs)
    console.print(f"\ndemo finished in {time.monotonic() - started:.0f} s; everything it wrote is in {out}/")
    return 0


def watch_daemon(config_path: Path, port: int, labels: dict, expected: list[int], log_path: Path) -> list[Decision]:
    """Start the daemon, print decisions as a subscriber receives them, stop it when the clip ends. Its log
    goes to ``log_path``; the end of it is shown when it fails or decides less than it should."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    decisions: list[Decision] = []
    seen: set[str] = set()
    lock = threading.Lock()
    base = load_config(config_path).topic_base

    def on_message(client, userdata, message):
        if topic_of(message.topic) is Topic.DECISION:
            d = Decision.model_validate_json(message.payload)
            with lock:
                if d.event_id in seen:  # de-duplicate, as every subscriber must
                    return
                seen.add(d.event_id)
                decisions.append(d)
                n = len(decisions)
            want = labels[expected[n - 1]] if n <= len(expected) else None
            if want:  # the operator says what the item really was (the status page's "correct…" button)
                correction = Command(id=f"correct-{n}", action="correct", event_id=d.event_id, label=want["name"])
                client.publish(under(base, Topic.COMMAND), json.dumps(correction.dump()), qos=Topic.COMMAND.qos)
            hint = f"(dropped: {want['name']} -> {want['bin']})" if want else ""
            console.print(
                f"  item {n}: [bold]{d.bin}[/bold] <- {d.label} ({d.confidence:.0%}, {d.votes}/{d.frames} votes) {hint}"
            )
        elif topic_of(message.topic) is Topic.STATUS:
            console.print(f"  status: {Status.model_validate_json(message.payload).state}")

    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(all_of(base), qos=1)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    time.sleep(0.5)
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config_path)], cwd=ROOT, stderr=log_file
        )
        try:
            daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    if daemon.returncode or len(decisions) < len(expected):
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        console.print(f"[red]the daemon exited {daemon.returncode}; the end of {log_path}:", *tail, sep="\n")
    return decisions
