"""What the tests share: paths and sizes, building once per run, a daemon config, starting the daemon,
waiting for a condition, an actuator config, draining a capture. Fixtures stay in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.sources import Capture

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCHEMAS = ROOT / "edge" / "schemas"
# Small enough for 2 cores: 4 classes, 64 px input, and the small residual backbone (residual blocks,
# BatchNorm, the same head, the same training and export code) for the device, daemon, update and bench
# tests. ResNet50 itself is trained, converted and gated on real images in test_quantization.py.
IMG_SIZE = 64
CLASSES = 4
BACKBONE = "resnet-mini"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A session folder built by one test process and read by the others: under pytest-xdist every worker
    would otherwise train and convert the same models again. ``build(folder)`` fills it, under a lock in
    the run's shared temporary folder; the tests only read what it holds."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of one run
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            done.touch()
    return folder


# The second bundle's own labels and input size (conftest's other_bundle_dir)
OTHER_LABELS = {"0": "可回收物/test_can", "1": "厨余垃圾/test_peel", "2": "有害垃圾/test_battery"}
OTHER_IMG_SIZE = 48


def board(name: str = "x86-dev") -> dict:
    """A shipped board's effective config, every setting written out (as `smartbin config show` prints it)
    but the device_id (the machine's own unless a test names one): what a test edits."""
    from edge.config import load_config

    return load_config(ROOT / "firmware_config" / f"{name}.yaml").model_dump(mode="json", exclude={"device_id"})


def write_config(path: Path, bundle: Path, uri: str, port: int, **overrides) -> Path:
    """A daemon config for tests: the x86-dev defaults with a test source, broker and outbox."""
    import yaml

    data = board()
    data["device_id"] = overrides.pop("device_id", "test-bin")
    if data["device_id"] is None:  # the machine's own (edge/system/identity.py)
        del data["device_id"]
    data["model"].update(bundle=str(bundle), threads=1)
    data["source"].update(uri=uri, frozen_after_s=0, roi=None)
    data["mqtt"].update(host="127.0.0.1", port=port, metrics_interval_s=0.3)
    data["outbox"]["path"] = str(path.parent / "outbox.sqlite")
    data["updates"] = {"store": str(path.parent / "models")}
    data["samples"] = {"path": str(path.parent / "samples"), "min_free_bytes": 0}
    data["counters"] = {"path": str(path.parent / "counters.sqlite")}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def poll(predicate, timeout: float, tick=lambda: None):
    """Call ``tick`` then ``predicate`` until the latter is truthy or ``timeout`` passes; return its last value.
    A bound on waiting, never a speed check."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        if value := predicate():
            return value
        time.sleep(0.05)
    return predicate()


def empty_bin_source(folder: Path) -> str:
    """A dir:// source of one empty-bin frame: the daemon starts, sends its outbox backlog, and ends."""
    from edge.formats.images import write_jpeg
    from edge.sources.scene import empty_floor

    folder.mkdir(parents=True, exist_ok=True)
    write_jpeg(folder / "0.jpg", empty_floor(240, 320, seed=3))
    return f"dir://{folder}"


def keras_arithmetic(model_file: Path) -> tuple[float, int]:
    """(GFLOP, convolution and dense layers) of a trained model, counted from its Keras layers: an
    independent check of what edge/ counts on the exported file (2 FLOP per multiply-add)."""
    import keras
    import numpy as np

    from convert.training.model import load_model

    flops, count = 0.0, 0

    def walk(model) -> None:
        nonlocal flops, count
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif isinstance(layer, keras.layers.Conv2D):
                out = layer.output.shape
                flops += 2 * out[1] * out[2] * np.prod(layer.kernel_size) * layer.input.shape[-1] * layer.filters
                count += 1
            elif isinstance(layer, keras.layers.Dense):
                flops += 2 * layer.input.shape[-1] * layer.units
                count += 1

    walk(load_model(model_file))
    return flops / 1e9, count


def schema(name: str) -> dict:
    """One of the MQTT payloads' JSON Schemas the package ships."""
    return json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))


def start_daemon(config: Path, *args: str) -> subprocess.Popen:
    """`python -m edge --config FILE` as a real subprocess, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """Wait for the daemon to end; (exit code, its stderr)."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def actuator_config(tmp_path: Path, port: int, mode: str, **options) -> Path:
    """A config whose actuator section drives ``mode`` (servo, gpio, log) with a short hold."""
    path = write_config(tmp_path / "config.yaml", tmp_path / "no-bundle", "synthetic://", port)
    import yaml

    data = yaml.safe_load(path.read_text())
    data["actuator"].update({"mode": mode, "hold_s": 0.05, "state_path": str(tmp_path / "actuator.sqlite"), **options})
    path.write_text(yaml.safe_dump(data))
    return path


def start_actuator(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`smartbin actuator` on ``config`` with gpiozero's mock pins (and ``env``), its log appended to ``log``."""
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", **(env or {})}
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "actuator", "--config", str(config)], cwd=ROOT, stderr=err, env=env
        )


def stop_daemon_and_actuator(daemon: subprocess.Popen, actuator: subprocess.Popen) -> tuple[int, str]:
    """The end of a scenario with both real processes: the actuator, then the daemon; (its exit code, its stderr)."""
    actuator.terminate()
    actuator.wait(20)
    daemon.terminate()
    return finish(daemon)


def every_decision_arrived(sub, folder: Path, timeout: float = 60) -> tuple[int, int]:
    """(distinct decisions ``sub`` heard, items the daemon of ``folder`` counted), once the first reaches the
    second or ``timeout`` passes: equal when no decision was lost on the way."""
    from edge.storage.counters import Counters
    from tests.support.mqtt_client import unique_decisions

    made = Counters(folder / "counters.sqlite").summary()["total"]["items"]
    poll(lambda: len(unique_decisions(sub.on("decision"))) >= made, timeout)
    return len(unique_decisions(sub.on("decision"))), made


def stop_all(publisher, actuator: subprocess.Popen, sub, broker) -> None:
    """The end of an actuator scenario: the daemon's publisher, the actuator process, the listener, the broker."""
    publisher.stop(timeout=1)
    actuator.terminate()
    actuator.wait(20)
    sub.close()
    broker.close()


def drain(capture: Capture, limit: int = 1000, after: int = -1, timeout: float = 5) -> list:
    """Frames with ids above ``after``, up to ``limit``, until none comes within ``timeout``."""
    frames, last = [], after
    while len(frames) < limit:
        frame = capture.next_frame(last, timeout=timeout)
        if frame is None:
            break
        frames.append(frame)
        last = frame.frame_id
    return frames
