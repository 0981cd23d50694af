"""Where `smartbin train` runs: which devices, in what precision, under which tf.distribute strategy.

``plan`` decides from what it is given (the devices asked for, the GPUs TensorFlow sees, ``TF_CONFIG``),
so the GPU path is tested up to its boundary on a machine without one; ``place`` applies a plan.
One device: TensorFlow's default strategy. Several local devices: ``MirroredStrategy``. Several
machines (``TF_CONFIG`` names more than one worker): ``MultiWorkerMirroredStrategy``. The batch size
given is per replica; the global batch and the learning rate grow with the replicas (the linear
scaling rule), and the plan says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edge.errors import SmartbinError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class Plan:
    """What a training run will use."""

    strategy: str  # default, mirrored, multi-worker
    devices: list[str] = field(default_factory=list)  # this machine's replicas, e.g. ["/gpu:0", "/gpu:1"]
    workers: int = 1
    worker_index: int = 0
    precision: str = "float32"
    logical_cpus: int = 0  # CPU split into this many devices (the mirrored path without GPUs)

    @property
    def replicas(self) -> int:
        return max(1, len(self.devices)) * self.workers

    @property
    def chief(self) -> bool:
        return self.worker_index == 0

    def describe(self, batch_size: int, learning_rate: float) -> str:
        where = ", ".join(self.devices) or "CPU"
        machines = f" on each of {self.workers} machines" if self.workers > 1 else ""
        scaled = (
            f"; global batch {batch_size * self.replicas} ({batch_size} per replica x {self.replicas}), "
            f"learning rate {learning_rate * self.replicas:g} ({learning_rate:g} x {self.replicas})"
            if self.replicas > 1
            else f"; batch {batch_size}, learning rate {learning_rate:g}"
        )
        loss = ", loss scaled dynamically" if self.precision == "mixed_float16" else ""
        return f"training on {where}{machines} ({self.strategy} strategy), {self.precision}{loss}{scaled}"


def _cluster(tf_config: str | None) -> tuple[int, int]:
    """(workers, this worker's index) from TF_CONFIG; (1, 0) without one."""
    if not tf_config:
        return 1, 0
    try:
        config = json.loads(tf_config)
        workers = len(config["cluster"]["worker"])
        index = int(config["task"]["index"]) if config["task"]["type"] == "worker" else 0
    except (ValueError, KeyError, TypeError) as exc:
        raise SmartbinError(f"TF_CONFIG: not a cluster spec with cluster.worker and task ({exc})") from exc
    return workers, index


def plan(devices: str, precision: str, gpus: list[str], tf_config: str | None = None) -> Plan:
    """The plan for ``--devices`` (auto: every GPU, else the CPU; all; gpu:0,gpu:1; cpu:N for N CPU
    replicas) and ``--precision``, given the GPUs TensorFlow sees (``/physical_device:GPU:0`` ...)."""
    if precision not in PRECISIONS:
        raise SmartbinError(f"--precision {precision}: unknown (allowed: {', '.join(PRECISIONS)})")
    local = [f"/gpu:{name.rsplit(':', 1)[-1]}" for name in gpus]
    logical = 0
    spec = devices.strip().lower()
    if spec in ("auto", "all"):
        chosen = local
        if spec == "all" and not local:
            raise SmartbinError("--devices all: TensorFlow sees no GPU (pip install 'smartbin[train-gpu]')")
    elif spec.startswith("cpu:"):
        if not spec[4:].isdigit() or int(spec[4:]) < 1:
            raise SmartbinError(f"--devices {devices}: cpu:N needs a count, e.g. cpu:2")
        logical = int(spec[4:])
        chosen = [f"/cpu:{i}" for i in range(logical)] if logical > 1 else []
    else:
        chosen = [f"/{part.strip()}" for part in spec.split(",") if part.strip()]
        missing = [d for d in chosen if d not in local]
        if missing:
            seen = ", ".join(d.strip("/") for d in local) or "none"
            raise SmartbinError(f"--devices {devices}: {', '.join(missing)} not found (GPUs TensorFlow sees: {seen})")
    if precision == "mixed_float16" and not [d for d in chosen if d.startswith("/gpu")]:
        raise SmartbinError(
            "--precision mixed_float16 needs a GPU (CPUs have no fast float16); "
            "use mixed_bfloat16 on CPUs with AMX or AVX-512 BF16, or float32"
        )
    workers, index = _cluster(tf_config)
    strategy = "multi-worker" if workers > 1 else "mirrored" if len(chosen) > 1 else "default"
    return Plan(strategy, chosen, workers, index, precision, logical)


def place(plan_: Plan):
    """Apply the plan: split the CPU if asked, set the precision policy; the strategy to build the model in."""
    import keras
    import tensorflow as tf

    if plan_.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * plan_.logical_cpus)
    keras.mixed_precision.set_global_policy(plan_.precision)
    if plan_.strategy == "multi-worker":
        return _multi_worker()
    if plan_.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(plan_.devices)
    return tf.distribute.get_strategy()


def _multi_worker():
    """MultiWorkerMirroredStrategy, with a ``reduce`` that takes what Keras 3 gives it (TensorFlow issue
    72388, checked on TensorFlow 2.21 and Keras 3.15 with two workers): the symbolic build at the start of
    ``fit`` reduces a whole (uint8 images, labels) batch in one call, which the collectives take neither
    as a nest nor as uint8, and each scalar metric is reduced "along axis 0", which a scalar has not."""
    import tensorflow as tf

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def one(part):
                distributed = isinstance(part, tf.distribute.DistributedValues)
                sample = part.values[0] if distributed else part
                if distributed and sample.dtype.is_integer:  # the batch is only looked at for its shapes
                    part = self.run(lambda t: tf.cast(t, tf.float32), args=(part,))
                scalar = getattr(sample, "shape", None) is not None and sample.shape.rank == 0
                return super(Strategy, self).reduce(reduce_op, part, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return Strategy()


def visible_gpus() -> list[str]:
    """The GPUs TensorFlow sees, by name."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]
