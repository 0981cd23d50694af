"""`smartbin train`: the seed's recipe (frozen ResNet + head), then an optional fine-tune phase."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from convert.data.sampling import even_class_weights, stratified_split
from convert.evaluation.report import write_report
from convert.quantization.batchnorm import reestimate_batchnorm
from convert.training.backbones import DEFAULT_BACKBONE
from convert.training.distribute import place, plan, visible_gpus
from convert.training.eta import plan_and_say
from convert.training.features import FeatureCache, head_model
from convert.training.inputs import make_dataset
from convert.training.model import build_model, load_model, unfreeze_last_stage
from edge.errors import SmartbinError
from edge.formats.dataset import Dataset, LabelledImage, load_dataset
from edge.formats.labels import Label

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved beside the model."""

    data: str | list[str]  # several folders are merged by label name
    out: str
    backbone: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    img_size: int = 224
    epochs: int = 8
    batch_size: int = 16
    fine_tune_epochs: int = 0
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    val_fraction: float = 0.1
    seed: int = 0
    bn_batches: int = 20  # BatchNorm statistics re-estimated on this many training batches (0: never)
    devices: str = "auto"  # convert/training/distribute.py: auto, all, gpu:0,gpu:1, cpu:N
    precision: str = "float32"  # or mixed_float16 (GPU), mixed_bfloat16
    feature_cache: str | None = None  # a frozen backbone's features kept here (convert/training/features.py)
    feature_passes: int = 0  # augmentation passes the cache holds (0: one per epoch)
    force: bool = False  # train even when classes have no bin or all share one
    class_weights: str = "even"  # or none: each image weighs the same (convert/data/sampling.even_class_weights)

    @property
    def cache_passes(self) -> int:
        """The augmentation passes the feature cache computes: --feature-passes, at most one per epoch."""
        return min(self.feature_passes or self.epochs, self.epochs)


def heads_on_cache(config: TrainConfig, frozen: bool, replicas: int) -> bool:
    """Whether the head phase trains on cached features: a frozen backbone, a cache folder, one replica."""
    return bool(config.feature_cache) and frozen and replicas == 1


def save_labels(path: Path, labels: list[Label]) -> None:
    path.write_text(json.dumps([lab.to_dict() for lab in labels], ensure_ascii=False, indent=2), encoding="utf-8")


def load_labels(path: Path) -> list[Label]:
    return [Label(**item) for item in json.loads(path.read_text(encoding="utf-8"))]


def run_config(run_dir: Path) -> dict:
    """The training config saved in a run folder ({} when there is none, e.g. a bare .keras file's folder)."""
    path = run_dir / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def find_run(path: Path, expected: str = "a run folder or a .keras file") -> tuple[Path, Path]:
    """(run folder, model file) for a training run folder or the .keras file in one."""
    run_dir = path if path.is_dir() else path.parent
    model_file = path / MODEL_FILE if path.is_dir() else path
    if not model_file.is_file():
        raise SmartbinError(f"{model_file}: no trained model (give {expected})")
    return run_dir, model_file


def _compile(model: keras.Model, learning_rate: float, num_classes: int) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
    )


THROUGHPUT_FILE = "throughput.json"


class Throughput(keras.callbacks.Callback):
    """Training images per second of one phase: each epoch's training steps (validation left out), the
    first epoch (tracing) left out when there are more."""

    def __init__(self, phase: str, images: int):
        super().__init__()
        self.phase, self.images, self.seconds = phase, images, []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def figure(self) -> dict:
        timed = self.seconds[1:] or self.seconds
        return {"phase": self.phase, "images_per_s": round(self.images * len(timed) / max(sum(timed), 1e-9), 1)}


class _SaveWhole(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves the whole model while another one (the head on its own) trains."""

    def __init__(self, whole: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.whole = whole

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self.whole)


def _callbacks(
    out: Path, append: bool, best: float | None = None, whole: keras.Model | None = None
) -> list[keras.callbacks.Callback]:
    """``best``: the best validation accuracy so far, so a later phase only overwrites a better model;
    ``whole``: the model to save when what trains is a part of it."""
    save = {"monitor": "val_accuracy", "mode": "max", "save_best_only": True, "initial_value_threshold": best}
    return [
        _SaveWhole(whole, str(out / MODEL_FILE), **save)
        if whole
        else keras.callbacks.ModelCheckpoint(str(out / MODEL_FILE), **save),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-7),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out / HISTORY_FILE), append=append),
    ]


def _resolve_weights(weights: str) -> str | None:
    if weights.lower() == "none":
        return None
    if weights == "imagenet":
        return weights
    if not Path(weights).is_file():
        raise SmartbinError(f"--weights {weights}: no such file (use imagenet, none or a weights file)")
    return weights


def train(config: TrainConfig) -> Path | None:
    """Train, keep the best checkpoint, write the report. Returns the run folder (None on a cluster's
    workers but the chief, which train beside it and write nothing)."""
    placement = plan(config.devices, config.precision, visible_gpus(), os.environ.get("TF_CONFIG"))
    strategy = place(placement)  # before anything else starts TensorFlow's devices
    log.info("%s", placement.describe(config.batch_size, config.learning_rate))
    # every worker of a cluster trains; the chief (worker 0) alone writes the run folder
    out = Path(config.out) if placement.chief else Path(tempfile.mkdtemp(prefix="smartbin-worker-"))
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    # The same data, seed and machine give the same model (and so the same export gates).
    tf.config.experimental.enable_op_determinism()
    dataset, (train_samples, val_samples) = _load(config)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    save_labels(out / LABELS_FILE, dataset.labels)

    weights = _resolve_weights(config.weights)
    batch = config.batch_size * placement.replicas
    train_ds = make_dataset(train_samples, config.img_size, batch, True, config.seed)
    val_ds = make_dataset(val_samples, config.img_size, batch, False)
    with strategy.scope():
        model, backbone = build_model(dataset.num_classes, config.img_size, config.backbone, weights)
        # A random backbone learns little when frozen: with no weights, everything trains.
        backbone.trainable = weights is None
        frozen, split = not backbone.trainable, (train_samples, val_samples)
        passes = config.cache_passes if heads_on_cache(config, frozen, placement.replicas) else None
        estimates, speed = plan_and_say(model, split, config, frozen, passes) if placement.replicas == 1 else ([], 0)
        phases = _fit(model, backbone, config, placement.replicas, train_ds, val_ds, out, split)
    if not placement.chief:  # its part of the cluster's training is done; the chief writes the run
        shutil.rmtree(out, ignore_errors=True)
        return None
    if (out / MODEL_FILE).exists():  # the best checkpoint, not the last epoch
        model = load_model(out / MODEL_FILE)
    model = _in_float32(model, config, dataset.num_classes)
    if config.bn_batches:
        # a frozen backbone keeps the statistics its features were learned with: only what trained is measured
        kept = model.get_layer(backbone.name) if frozen else None
        _settle_batchnorm(model, train_ds, val_ds, config.bn_batches, kept)
    model.save(out / MODEL_FILE)
    _report(out, model, val_samples, dataset.labels, config, frozen)
    where = {"devices": placement.devices or ["CPU"], "replicas": placement.replicas, "precision": config.precision}
    told = {"estimates": estimates, "forward_images_per_s": speed}
    (out / THROUGHPUT_FILE).write_text(json.dumps({**where, "phases": phases, **told}, indent=2), encoding="utf-8")
    for phase in phases:
        log.info(
            "%s: %.1f images/s (%s, %s)", phase["phase"], phase["images_per_s"], where["devices"], config.precision
        )
    return out


def _load(config: TrainConfig) -> tuple[Dataset, tuple[list[LabelledImage], list[LabelledImage]]]:
    """The dataset (refused when its classes' bins would sort badly, unless forced) and its split."""
    dataset = load_dataset(config.data)
    if (problems := dataset.bin_problems()) and not config.force:
        raise SmartbinError("; ".join(problems) + " (or train anyway with --force)")
    for problem in problems:
        log.warning("%s (--force: training anyway)", problem)
    for problem in dataset.problems:
        log.warning("skipped: %s", problem)
    train_samples, val_samples = stratified_split(dataset.samples, config.val_fraction, config.seed)
    log.info(
        "%d training and %d validation images, %d classes", len(train_samples), len(val_samples), dataset.num_classes
    )
    return dataset, (train_samples, val_samples or train_samples)


def _report(
    out: Path, model: keras.Model, val: list[LabelledImage], labels: list[Label], config: TrainConfig, frozen: bool
) -> None:
    """The run's report (convert/evaluation/report.py) on the validation images, each training phase marked."""
    probs = model.predict(make_dataset(val, config.img_size, config.batch_size, False), verbose=0)
    phases = [("head" if frozen else "whole model", 0)]
    if config.fine_tune_epochs and frozen:
        phases.append(("fine-tune", config.epochs))
    truth = np.array([s.label for s in val])
    title = f"Training run {out.resolve().name}: validation images"
    write_report(out, probs, truth, labels, [s.path for s in val], title, out / HISTORY_FILE, phases)


def _fit(
    model: keras.Model,
    backbone: keras.Model,
    config: TrainConfig,
    replicas: int,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    out: Path,
    samples: tuple[list[LabelledImage], list[LabelledImage]],
) -> list[dict]:
    """The head phase, then the optional fine-tune phase; learning rates scaled with the replicas.
    Returns each phase's throughput."""
    verbose = 1 if sys.stderr.isatty() else 2
    classes, images = int(model.output_shape[-1]), len(samples[0])
    frozen = not backbone.trainable
    labels = [s.label for s in samples[0]]
    weights = even_class_weights(labels, classes) if config.class_weights == "even" else None
    spread = max(weights.values()) / min(weights.values()) if weights else 1.0
    if spread > 1.5:
        log.info("classes weighed evenly: an image of the rarest counts %.1fx one of the commonest", spread)
    if heads_on_cache(config, frozen, replicas):
        history, figures = _fit_head_on_features(model, config, samples, out, verbose, weights)
    else:
        _compile(model, config.learning_rate * replicas, classes)
        speed = Throughput("head" if frozen else "whole model", images)
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            class_weight=weights,
            callbacks=[*_callbacks(out, False), speed],
            verbose=verbose,
        )
        figures = [speed.figure()]
    if config.fine_tune_epochs > 0 and frozen:
        best = max(history.history["val_accuracy"])
        count = unfreeze_last_stage(backbone)
        log.info("fine-tuning %d layers of the last stage at lr %g", count, config.fine_tune_learning_rate)
        _compile(model, config.fine_tune_learning_rate * replicas, classes)
        speed = Throughput("fine-tune", images)
        model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=config.epochs,
            epochs=config.epochs + config.fine_tune_epochs,
            class_weight=weights,
            callbacks=[*_callbacks(out, True, best), speed],
            verbose=verbose,
        )
        figures.append(speed.figure())
    return figures


def _fit_head_on_features(
    model: keras.Model,
    config: TrainConfig,
    samples: tuple[list[LabelledImage], list[LabelledImage]],
    out: Path,
    verbose: int,
    weights: dict[int, float] | None,
) -> tuple[keras.callbacks.History, list[dict]]:
    """The head phase on cached backbone features, classes weighed by ``weights``: epoch e trains on
    augmentation pass e mod passes.
    Returns its history and the throughput of computing the features and of training on them."""
    train_samples, val_samples = samples
    cache = FeatureCache(config.feature_cache, model, config.img_size, config.batch_size, config.seed)
    passes = config.cache_passes
    start = time.perf_counter()
    features = np.stack([cache.features(train_samples, p) for p in range(passes)])
    labels = np.array([s.label for s in train_samples])
    val = (cache.features(val_samples, None), np.array([s.label for s in val_samples]))
    seconds = time.perf_counter() - start
    log.info("feature cache %s: %d computed, %d reused (%d passes)", cache.folder, cache.computed, cache.reused, passes)
    computing = {"phase": "features", "images_per_s": round(cache.computed / max(seconds, 1e-9), 1)}
    head = head_model(model)
    _compile(head, config.learning_rate, int(model.output_shape[-1]))

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        rows = tf.data.Dataset.from_tensor_slices((tf.gather(features, e % passes), labels))
        return rows.shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)

    data = tf.data.Dataset.range(config.epochs).flat_map(epoch).prefetch(tf.data.AUTOTUNE)
    speed = Throughput("head on cached features", len(labels))
    history = head.fit(
        data,
        validation_data=val,
        epochs=config.epochs,
        steps_per_epoch=-(-len(labels) // config.batch_size),
        class_weight=weights,
        callbacks=[*_callbacks(out, False, whole=model), speed],
        verbose=verbose,
    )
    return history, [computing, speed.figure()]


def _in_float32(model: keras.Model, config: TrainConfig, num_classes: int) -> keras.Model:
    """The model as saved and converted: float32 layers (mixed precision's weights are float32 already)."""
    if keras.mixed_precision.global_policy().name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    plain, _ = build_model(num_classes, config.img_size, config.backbone, None)
    plain.set_weights(model.get_weights())
    return plain


def _top1(model: keras.Model, batches: tf.data.Dataset) -> float:
    hits = total = 0
    for images, labels in batches:
        hits += int((np.asarray(model(images, training=False)).argmax(1) == labels.numpy()).sum())
        total += len(labels)
    return hits / max(total, 1)


def _settle_batchnorm(
    model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, count: int, frozen: keras.Model | None
) -> None:
    """Re-estimate the trained BatchNorms on ``count`` training batches after training: the moving averages
    lag the last steps' weights, and the head's were measured with Dropout on. Kept when the validation top-1
    is not lower (the float model the converter gates against is then the one int8 can follow)."""
    before, weights = _top1(model, val_ds), model.get_weights()
    reestimate_batchnorm(model, train_ds.repeat(), count, frozen)
    after = _top1(model, val_ds)
    if after < before:
        model.set_weights(weights)
    log.info(
        "BatchNorm re-estimated on %d batches: validation top-1 %.1f%% -> %.1f%% (%s)",
        count,
        100 * before,
        100 * after,
        "kept" if after >= before else "undone",
    )
