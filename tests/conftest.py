"""Shared fixtures: a small synthetic dataset, one real training run, one real bundle, a real broker."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from tests.support import ARTIFACTS, BACKBONE, CLASSES, IMG_SIZE, OTHER_IMG_SIZE, OTHER_LABELS, built_once

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `make test` runs the suite in parallel workers (pytest-xdist): each worker picks its brokers' and
# servers' ports from a range of its own (edge/tools/localbroker.free_port), below the kernel's ephemeral
# ports, so two workers never choose the same port before one of them binds it.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    _worker = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    os.environ.setdefault("SMARTBIN_PORT_RANGE", f"{20000 + 1500 * _worker}-{21499 + 1500 * _worker}")


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    from convert.data.synth import write_synthetic

    return built_once(tmp_path_factory, "data", lambda out: write_synthetic(out, CLASSES, 24, seed=0, size=80))


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    from convert.training.model import write_stand_in_weights

    def build(out: Path) -> None:
        write_stand_in_weights(out / "backbone.weights.h5", IMG_SIZE, BACKBONE)

    return built_once(tmp_path_factory, "weights", build) / "backbone.weights.h5"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, dataset_dir: Path, weights_file: Path) -> Path:
    """A real training run through the CLI: frozen backbone from a local weights file."""
    from edge.cli import main

    def build(out: Path) -> None:
        train = ["train", "--data", str(dataset_dir), "--out", str(out / "run"), "--weights", str(weights_file)]
        train += ["--backbone", BACKBONE, "--img-size", str(IMG_SIZE), "--epochs", "20", "--batch-size", "16"]
        assert main([*train, "--val-fraction", "0.25"]) == 0

    return built_once(tmp_path_factory, "run", build) / "run"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, request) -> Path:
    """All four TFLite variants and ONNX, each through its accuracy gate.

    SMARTBIN_TEST_BUNDLE=DIR reuses a bundle from an earlier run while iterating on device code.
    """
    from edge.cli import main

    if os.environ.get("SMARTBIN_TEST_BUNDLE"):
        return Path(os.environ["SMARTBIN_TEST_BUNDLE"])

    run_dir = request.getfixturevalue("run_dir")

    def build(out: Path) -> None:
        assert main(["convert", str(run_dir), "--out", str(out / "bundle"), "--onnx", "--calib-samples", "100"]) == 0

    return built_once(tmp_path_factory, "bundle", build) / "bundle"


@pytest.fixture(scope="session")
def split_bundle_dir(tmp_path_factory, run_dir: Path) -> Path:
    """The session's run as a bundle in two parts (`convert --split-head`): int8, onnx and onnx_int8 backbones,
    the head beside them."""
    from edge.cli import main

    def build(out: Path) -> None:
        convert = ["convert", str(run_dir), "--out", str(out / "bundle"), "--variants", "int8", "--onnx"]
        assert main([*convert, "--split-head", "--no-probes", "--calib-samples", "50"]) == 0

    return built_once(tmp_path_factory, "split", build) / "bundle"


@pytest.fixture(scope="session")
def other_bundle_dir(tmp_path_factory) -> Path:
    """A second real bundle with other labels (3 classes of its own) and another input size (48 px).

    SMARTBIN_TEST_OTHER_BUNDLE=DIR reuses one, as SMARTBIN_TEST_BUNDLE does."""
    if os.environ.get("SMARTBIN_TEST_OTHER_BUNDLE"):
        return Path(os.environ["SMARTBIN_TEST_OTHER_BUNDLE"])
    return built_once(tmp_path_factory, "other", _build_other_bundle) / "bundle"


def _build_other_bundle(tmp: Path) -> None:
    import json

    from convert.data.synth import write_synthetic
    from convert.training.model import write_stand_in_weights
    from edge.cli import main

    data = write_synthetic(tmp / "data", 3, 12, seed=5, size=60)
    (data / "garbage_classify_rule.json").write_text(json.dumps(OTHER_LABELS, ensure_ascii=False), encoding="utf-8")
    weights = write_stand_in_weights(tmp / "w.weights.h5", OTHER_IMG_SIZE, BACKBONE)
    run = tmp / "run"
    train = ["train", "--data", str(data), "--out", str(run), "--weights", str(weights), "--backbone", BACKBONE]
    assert main([*train, "--img-size", str(OTHER_IMG_SIZE), "--epochs", "8", "--val-fraction", "0.25"]) == 0
    out = tmp / "bundle"
    assert (
        main(
            [
                "convert",
                str(run),
                "--out",
                str(out),
                "--variants",
                "int8",
                "--name",
                "other-model",
                "--allow-accuracy-drop",
                "--no-probes",
            ]
        )
        == 0
    )


@pytest.fixture()
def bundle_copy(tmp_path: Path, bundle_dir: Path) -> Path:
    """A private copy of the bundle that a test may tamper with, as converted (no TensorRT engine cache a
    test's fake left beside the shared one: its load would then skip the build, and its first run)."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle", ignore=shutil.ignore_patterns("trt_cache*")))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture()
def broker(tmp_path: Path):
    """A real mosquitto on a free port with its own config (amqtt where mosquitto is absent)."""
    from edge.tools.localbroker import LocalBroker

    b = LocalBroker(workdir=tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture()
def closing():
    """An ExitStack closed when the test ends, whether it passed or not: servers and fleets a test starts."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory):
    """Video clips of items dropped into an empty bin; returns (path, schedule of classes)."""
    from edge.sources.synthetic import SyntheticSource, write_clip

    def make(items: int = 4, seed: int = 3) -> tuple[Path, list[int]]:
        path = tmp_path_factory.mktemp("clips") / f"items{items}_{seed}.avi"
        source = SyntheticSource("synthetic://", classes=CLASSES, items=items, empty=6, present=8, seed=seed)
        write_clip(str(path), source, fps=20)
        return path, source.schedule[:items]

    return make


# The longest modules first (measured, 3 workers on 2 cores): in parallel workers (make test) the run lasts
# at least as long as its longest module, so that one starts at once and the short ones fill in at the end.
LONGEST_FIRST = (
    "test_real_systemd_backoff.py",  # five minutes of a bin's restarts, mostly waiting
    "test_quantization.py",
    "test_demo.py",
    "test_rabbitmq_cluster.py",  # three clusters of three Erlang VMs, one after the other
    "test_updates.py",
    "test_real_systemd.py",
    "test_distribute.py",
    "test_train_predict.py",
    "test_convert.py",
    "test_field_day.py",
    "test_pick.py",
    "test_clocks_311.py",
    "test_samples.py",
    "test_features.py",
    "test_quant_photos.py",
    "test_daemon.py",
    "test_bad_input.py",
)


def pytest_configure(config) -> None:
    # pytest-xdist hands whole modules out by their number of tests unless told not to (which started the
    # digits test five minutes in, measured); keep LONGEST_FIRST's order however pytest is started
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order
