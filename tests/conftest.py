"""Shared fixtures: a small synthetic dataset, one real training run, one real bundle, a real broker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# Small enough for 2 cores: 4 classes, 64 px input. The same code runs 224 px for users.
IMG_SIZE = 64
CLASSES = 4


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    from convert.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("data"), CLASSES, 24, seed=0, size=80)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    from convert.model import write_stand_in_weights

    return write_stand_in_weights(tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5", IMG_SIZE)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, dataset_dir: Path, weights_file: Path) -> Path:
    """A real training run through the CLI: frozen backbone from a local weights file."""
    from edge.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    code = main(
        [
            "train",
            "--data",
            str(dataset_dir),
            "--out",
            str(out),
            "--weights",
            str(weights_file),
            "--img-size",
            str(IMG_SIZE),
            "--epochs",
            "20",
            "--batch-size",
            "16",
            "--val-fraction",
            "0.25",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, run_dir: Path) -> Path:
    """All four TFLite variants and ONNX, each through its accuracy gate."""
    from edge.cli import main

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    assert main(["convert", str(run_dir), "--out", str(out), "--onnx", "--calib-samples", "32"]) == 0
    return out


@pytest.fixture()
def bundle_copy(tmp_path: Path, bundle_dir: Path) -> Path:
    """A private copy of the bundle that a test may tamper with."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
