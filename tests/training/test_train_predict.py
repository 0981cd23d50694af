"""A real (small) training run, its report, and predict with and without TTA."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from edge.cli import main
from tests.support import BACKBONE, CLASSES

pytestmark = pytest.mark.slow


def test_training_run_folder_and_accuracy_above_chance(run_dir: Path):
    for name in (
        "model.keras",
        "labels.json",
        "history.csv",
        "report.json",
        "confusion_matrix.png",
        "bin_confusion_matrix.png",
        "worst_images.png",
        "training_curves.png",
        "report.html",
        "train_config.json",
    ):
        assert (run_dir / name).is_file(), name
    for png in run_dir.glob("*.png"):  # pictures that open, not empty files
        assert min(cv2.imread(str(png)).shape[:2]) >= 200, png
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    chance = 1 / CLASSES
    assert report["top1"] >= chance + 0.4, report["top1"]
    assert set(report["per_bin"]) == {"other", "kitchen", "recyclable", "hazardous"}
    assert len(report["confusion_matrix"]) == CLASSES
    labels = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    assert [lab["index"] for lab in labels] == list(range(CLASSES))
    with (run_dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"accuracy", "val_accuracy", "loss"} <= set(rows[0])
    # the report's figures agree with each other: the matrices hold every validation image
    images = report["images"]
    assert sum(map(sum, report["confusion_matrix"])) == sum(map(sum, report["bin_confusion_matrix"])) == images
    assert sum(r["support"] for r in report["per_class_precision_recall"].values()) == images
    worst = [w["true_probability"] for w in report["worst"]]
    assert worst == sorted(worst) and len(worst) == min(24, images)
    # every phase that ran was estimated before it started
    speed = json.loads((run_dir / "throughput.json").read_text(encoding="utf-8"))
    assert [e["phase"] for e in speed["estimates"]] == [p["phase"] for p in speed["phases"]]
    assert all(e["seconds"] > 0 for e in speed["estimates"]) and speed["forward_images_per_s"] > 0


def test_model_takes_uint8_pixels_with_preprocessing_inside(run_dir: Path):
    import numpy as np
    from keras.applications.resnet import preprocess_input

    from convert.training.model import load_model

    model = load_model(run_dir / "model.keras")
    assert model.input.dtype == "uint8"
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    inner = np.asarray(model.get_layer("caffe_preprocess")(x))
    np.testing.assert_allclose(inner, preprocess_input(x.astype("float32")), atol=1e-4)


def _images(dataset_dir: Path, n: int) -> list[tuple[str, int]]:
    pairs = []
    for i in range(n):
        name, label = (dataset_dir / f"img_{i}.txt").read_text(encoding="utf-8").strip().split(", ")
        pairs.append((str(dataset_dir / name), int(label)))
    return pairs


@pytest.mark.parametrize("tta", [1, 4])
def test_predict_json_with_and_without_tta(run_dir: Path, dataset_dir: Path, tta: int, capsys):
    pairs = _images(dataset_dir, 8)
    assert main(["predict", str(run_dir), *[p for p, _ in pairs], "--tta", str(tta), "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(results) == 8
    correct = sum(r["label_index"] == label for r, (_, label) in zip(results, pairs))
    assert correct >= 6
    assert all(r["bin"] in ("other", "kitchen", "recyclable", "hazardous") for r in results)
    assert all(0 <= r["confidence"] <= 1 and len(r["top_k"]) == 3 for r in results)


def test_predict_bad_inputs_name_the_input_and_others_still_run(
    run_dir: Path, dataset_dir: Path, tmp_path: Path, capsys
):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    good = _images(dataset_dir, 1)[0][0]
    code = main(
        [
            "predict",
            str(run_dir),
            str(empty),
            good,
            str(text),
            str(tmp_path / "missing.jpg"),
            "http://127.0.0.1:9/nothing.jpg",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.count("\n") == 1 and good in captured.out
    err = captured.err.splitlines()
    assert f"smartbin: error: {empty}: empty file (0 bytes)" in err
    assert f"smartbin: error: {text}: not a readable image (JPEG, PNG, BMP, WebP, ...)" in err
    assert f"smartbin: error: {tmp_path / 'missing.jpg'}: no such file" in err
    assert any(
        line.startswith("smartbin: error: http://127.0.0.1:9/nothing.jpg: cannot download image") for line in err
    )
    assert "Traceback" not in captured.err


def test_weights_file_is_really_loaded(weights_file: Path, tmp_path: Path):
    import numpy as np

    from convert.training.model import build_model

    _, loaded = build_model(CLASSES, 64, BACKBONE, weights=str(weights_file))
    _, fresh = build_model(CLASSES, 64, BACKBONE, weights=None)
    _, again = build_model(CLASSES, 64, BACKBONE, weights=str(weights_file))
    w_loaded, w_fresh, w_again = (m.get_layer("conv1_conv").get_weights()[0] for m in (loaded, fresh, again))
    np.testing.assert_array_equal(w_loaded, w_again)
    assert not np.array_equal(w_loaded, w_fresh)


def test_train_refuses_missing_weights_file(dataset_dir: Path, tmp_path: Path, capsys):
    code = main(
        [
            "train",
            "--data",
            str(dataset_dir),
            "--out",
            str(tmp_path / "r"),
            "--weights",
            str(tmp_path / "nope.h5"),
            "--img-size",
            "64",
            "--epochs",
            "1",
        ]
    )
    assert code == 2
    assert "no such file (use imagenet, none or a weights file)" in capsys.readouterr().err


def test_weights_none_trains_the_whole_backbone(tmp_path: Path):
    """With no pretrained weights there is nothing to freeze: the backbone's own filters change."""
    import keras
    import numpy as np

    from convert.data.synth import write_synthetic
    from convert.training.model import build_model

    data = write_synthetic(tmp_path / "d", 2, 4, size=40)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(out),
                "--weights",
                "none",
                "--backbone",
                BACKBONE,
                "--img-size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--val-fraction",
                "0.25",
            ]
        )
        == 0
    )
    keras.utils.set_random_seed(0)  # train() seeds the same way before building its model
    _, initial = build_model(2, 32, BACKBONE, weights=None)
    from convert.training.model import load_model

    trained = load_model(out / "model.keras").get_layer("resnet_mini")
    before = initial.get_layer("conv1_conv").get_weights()[0]
    after = trained.get_layer("conv1_conv").get_weights()[0]
    assert before.shape == after.shape and not np.allclose(before, after)


def test_top5_counts_a_hit_in_the_first_five_and_only_there():
    import numpy as np

    from edge.benchmark.accuracy import accuracy_figures
    from edge.formats.labels import Label

    labels = [Label(i, f"c{i}", "other") for i in range(7)]
    # image 0: right at rank 1; image 1: right at rank 5; image 2: right at rank 6 (a miss for top-5)
    probs = np.array(
        [
            [0.40, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03],
            [0.30, 0.25, 0.20, 0.12, 0.08, 0.03, 0.02],
            [0.30, 0.25, 0.20, 0.12, 0.08, 0.03, 0.02],
        ]
    )
    figures = accuracy_figures(probs, np.array([0, 4, 5]), labels)
    assert figures["top1"] == pytest.approx(1 / 3) and figures["top5"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("backbone", "conv4_blocks"), [("resnet101", 23), ("resnet152", 36)])
def test_deeper_backbones_are_built_with_the_seed_head(backbone: str, conv4_blocks: int, tmp_path: Path):
    """--backbone resnet101/resnet152: the real Keras networks, with weights from a local file and the same head."""
    import numpy as np

    from convert.training.model import build_model, write_stand_in_weights

    weights = write_stand_in_weights(tmp_path / f"{backbone}.weights.h5", 32, backbone)
    model, base = build_model(3, 32, backbone, str(weights))
    names = {layer.name for layer in base.layers}
    assert f"conv4_block{conv4_blocks}_out" in names and f"conv4_block{conv4_blocks + 1}_out" not in names
    assert model.name == f"smartbin_{backbone}" and model.output_shape == (None, 3)
    probs = np.asarray(model(np.zeros((2, 32, 32, 3), np.uint8), training=False))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_training_sees_the_pixels_the_device_sees(dataset_dir: Path):
    """Validation images through the training pipeline equal the device's own preprocessing, pixel for pixel."""
    import numpy as np

    from convert.training.inputs import make_dataset
    from edge.formats.dataset import load_dataset
    from edge.vision.preprocess import load_images

    samples = load_dataset(dataset_dir).samples[:12]
    batch, _ = next(iter(make_dataset(samples, 64, 12, False)))
    assert np.array_equal(batch.numpy(), load_images(samples, 64, 64))


def test_train_reports_the_top1_that_convert_measures(run_dir: Path, bundle_dir: Path):
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    assert report["top1"] == pytest.approx(manifest["keras_accuracy"]["top1"], abs=1e-9)
    assert report["images"] == manifest["keras_accuracy"]["images"]


def test_the_best_checkpoint_survives_a_worse_fine_tune_phase(tmp_path: Path):
    from convert.data.synth import write_synthetic
    from convert.training.model import write_stand_in_weights
    from convert.training.train import TrainConfig, train

    data = write_synthetic(tmp_path / "d", 3, 8, seed=4, size=40)
    weights = write_stand_in_weights(tmp_path / "w.weights.h5", 32, BACKBONE)
    config = TrainConfig(
        data=str(data), out=str(tmp_path / "run"), weights=str(weights), backbone=BACKBONE, img_size=32, epochs=6,
        batch_size=8, fine_tune_epochs=2, fine_tune_learning_rate=50.0, val_fraction=0.34,
    )  # fmt: skip
    out = train(config)
    with (out / "history.csv").open() as fh:
        val = [float(row["val_accuracy"]) for row in csv.DictReader(fh)]
    assert len(val) == 8
    assert min(val[6:]) < max(val[:6])  # the fine-tune phase really was worse at some point
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["top1"] == pytest.approx(max(val), abs=1e-6)


def test_evaluate_report_has_the_figures_evaluate_prints(
    bundle_dir: Path, dataset_dir: Path, tmp_path: Path, capsys, monkeypatch
):
    """`evaluate --report` draws the same computation `evaluate` prints, for the variant a bin runs; the
    data folder given as a user types it, relative (the page links each worst image by its file URI)."""
    monkeypatch.chdir(dataset_dir.parent)
    args = ["evaluate", str(bundle_dir), "--data", dataset_dir.name, "--json"]
    assert main([*args, "--report", str(tmp_path / "r"), "--variant", "float16"]) == 0
    printed = json.loads(capsys.readouterr().out)["variants"]["float16"]
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    for key in ("top1", "top5", "bin_accuracy", "per_bin"):
        assert report[key] == printed[key], key
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {"report.html", "confusion_matrix.png", "worst_images.png"}
    assert all(Path(w["path"]).is_file() for w in report["worst"])
    assert main([*args, "--report", str(tmp_path / "r2"), "--variant", "int4"]) == 2
    assert "--variant int4: not in" in capsys.readouterr().err
