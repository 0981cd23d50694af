"""The per-layer quantization report, other calibrations and gate-driven mixed precision, on real conversions.

The model is made to defeat full-integer quantization the way real ones do (one outlier activation
channel sets the tensor's range, so the small channels the prediction depends on round to zero);
the converter must say which layers suffer and then find the layers to keep in float.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Bundle
from edge.runtime import open_engine
from tests.conftest import keras_arithmetic

pytestmark = pytest.mark.slow
SIZE, CLASSES = 32, 4
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model.keras, dataset): features [small x4, one huge]; the head reads only the small ones."""
    import cv2
    import keras

    tmp = tmp_path_factory.mktemp("outlier")
    data = tmp / "data"
    rng = np.random.default_rng(2)
    for i in range(CLASSES * 30):  # flat colours spread over the cube: the model's margins are wide
        folder = data / f"class_{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), np.uint8))
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")  # as smartbin's models: pixels in, preprocessing inside
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(CLASSES + 1, name="features")(x)
    logits = keras.layers.Dense(CLASSES, name="head")(features)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    rng = np.random.default_rng(0)
    kernel = np.concatenate([rng.normal(0, 40, (3, CLASSES)), np.full((3, 1), 3e4)], axis=1)
    model.get_layer("features").set_weights([kernel, np.zeros(CLASSES + 1)])
    model.get_layer("head").set_weights([np.vstack([np.eye(CLASSES), np.zeros((1, CLASSES))]), np.zeros(CLASSES)])
    path = tmp / "run" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    return path, data


def convert(model: Path, data: Path, out: Path, *extra: str) -> int:
    from edge.cli import main

    return main(["convert", str(model), "--data", str(data), "--out", str(out), "--no-probes", *extra])


def test_full_integer_fails_and_the_report_names_the_layers(outlier_model, tmp_path, capsys):
    model, data = outlier_model
    out = tmp_path / "bundle"
    code = convert(model, data, out, "--variants", "int8", "--no-mixed-precision")
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "int8 missed its gate" in err
    # the per-layer table is printed for the failing variant, worst first, with the layers' names
    assert "channel_sqnr_db" in err and "features" in err, err[-3000:]


def test_mixed_precision_keeps_the_fewest_layers_in_float_until_the_gate_passes(outlier_model, tmp_path):
    model, data = outlier_model
    out = tmp_path / "mixed"
    assert convert(model, data, out, "--variants", "float32,int8", "--onnx") == 0
    bundle = Bundle.open(out)
    for variant in ("int8", "onnx_int8"):
        entry = bundle.manifest.variants[variant]
        report = entry.quantization
        assert entry.gate.passed and report is not None, variant
        first = report.attempts[0]
        assert first.what.startswith("MinMax calibration") and first.agreement < 0.99 and not first.kept
        kept = [a for a in report.attempts if a.kept]
        assert len(kept) == 1 and kept[0].agreement >= 0.99
        if report.float_layers:  # mixed precision: measured speed of both models, same images, same run
            assert report.ms_per_image > 0 and report.int8_ms_per_image > 0
            assert len(report.float_layers) < report.quantized_ops  # how much of the model stayed float
            assert report.float_layers[0] == report.worst_layers[0].name  # the search starts from the worst
        else:  # another calibration passed
            assert variant == "onnx_int8" and kept[0].what.endswith("calibration")
        assert report.worst_layers and all(w.range[0] <= w.range[1] for w in report.worst_layers)
    assert bundle.manifest.variants["int8"].quantization.float_layers, "full-integer TFLite cannot pass here"
    saved = json.loads((out / "quantization.json").read_text())
    assert set(saved) == {"int8", "onnx_int8"}
    markdown = (out / "quantization.md").read_text()
    assert "left in float" in markdown and "| layer | op | error | range (activations" in markdown

    # the bench, in one run: the mixed int8 beside the full-integer one (written despite its gate) and float32
    full = tmp_path / "full"
    assert convert(model, data, full, "--variants", "int8", "--no-mixed-precision", "--allow-accuracy-drop") == 0
    assert not Bundle.open(full).manifest.variants["int8"].gate.passed
    report = tmp_path / "bench.json"
    bench = [sys.executable, str(ROOT / "edge" / "bench.py"), "--bundle", str(out), "--bundle", str(full)]
    bench += ["--variants", "int8,float32", "--threads", "1", "--runs", "5", "--warmup", "1", "--modes", "invoke"]
    result = subprocess.run([*bench, "--json", str(report)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r["variant"]: r for r in json.loads(report.read_text())["results"]}
    assert set(rows) == {"int8 (mixed)", "float32 (mixed)", "int8 (full)"}
    assert all(r["status"] == "ok" and r["latency_ms"]["p50"] > 0 for r in rows.values())
    assert rows["int8 (full)"]["agreement"] < 0.99 <= rows["int8 (mixed)"]["agreement"]
    assert "int8 (mixed)" in result.stdout and "int8 (full)" in result.stdout


def test_the_report_on_request_when_everything_passes(tmp_path, run_dir):
    from edge.cli import main

    out = tmp_path / "bundle"
    assert (
        main(["convert", str(run_dir), "--out", str(out), "--variants", "int8", "--no-probes", "--quant-report"]) == 0
    )
    report = Bundle.open(out).manifest.variants["int8"].quantization
    assert report.float_layers == [] and len(report.attempts) == 1 and report.attempts[0].kept
    worst = report.worst_layers
    assert len(worst) == 10 and [w.error for w in worst] == sorted(w.error for w in worst)
    assert (out / "quantization.md").is_file()


def assert_integer_variants(bundle: Bundle, most_in_float: dict[str, int]) -> None:
    """Every quantized variant passed its gate on many images with at most the given operations in float."""
    for variant, most in most_in_float.items():
        entry = bundle.manifest.variants[variant]
        g, report = entry.gate, entry.quantization
        floats = len(report.float_layers) if report else 0
        print(
            f"{bundle.manifest.name} {variant}: agreement {g.agreement:.1%} on {g.confident_images} of "
            f"{g.agreement_images} (all: {g.overall_agreement:.1%}), held-out top-1 {g.top1:.1%} vs "
            f"{g.keras_top1:.1%}, "
            f"{floats} op(s) in float"
        )
        assert g.passed and g.agreement >= 0.99 and g.top1_drop <= 0.01 + 1e-9, variant
        assert g.agreement_images >= 500 and g.confident_images >= 100, variant  # measured on many images
        assert floats <= most, (variant, report.float_layers)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Real scans: scikit-learn's copy of the UCI handwritten digits (1,797 images, 10 classes, shipped
    inside the package), written as class folders at 48 px."""
    from tests.realimages import write_digits

    return write_digits(tmp_path_factory.mktemp("digits") / "data")


def test_resnet50_on_real_scans_quantizes_to_full_integer(digits, tmp_path):
    """ResNet50 (a frozen seeded backbone, the head trained 4 epochs on real scans): with the head's
    BatchNorms re-estimated and folded, dynamic, int8 and onnx_int8 pass the gate with at most 2/3/3
    operations in float, and the exported file's arithmetic is ResNet50's own."""
    from convert.formats import onnx_recipe
    from convert.model import write_stand_in_weights
    from edge.cli import main

    weights = write_stand_in_weights(tmp_path / "w.weights.h5", 48)
    run = tmp_path / "run"
    train = ["train", "--data", str(digits), "--out", str(run), "--weights", str(weights), "--img-size", "48"]
    assert main([*train, "--epochs", "4"]) == 0
    out = tmp_path / "digits"
    assert main(["convert", str(run), "--out", str(out), "--variants", "dynamic,int8", "--onnx", "--no-probes"]) == 0
    bundle = Bundle.open(out)
    assert bundle.manifest.keras_accuracy["top1"] > 0.3  # it learned (chance is 0.1)
    assert_integer_variants(bundle, {"dynamic": 2, "int8": 3, "onnx_int8": 3})
    assert bundle.manifest.variants["onnx_int8"].recipe == onnx_recipe().describe()  # for this machine's CPU
    # the arithmetic the bench's floor uses, counted on the exported file, is ResNet50's own
    gflop, layers = keras_arithmetic(run / "model.keras")
    assert layers == 53 + 3 and 0.35 < gflop < 0.45  # 53 convolutions and the head's 3 dense layers, at 48 px
    assert open_engine(bundle, "litert", "int8").flops() / 1e9 == pytest.approx(gflop, rel=0.01)
