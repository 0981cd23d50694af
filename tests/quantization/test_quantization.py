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

from edge.formats.bundle import Bundle
from edge.runtime import open_engine
from edge.system.cpu import is_x86
from tests.support import ROOT, keras_arithmetic
from tests.support.quantization import assert_every_recipe_passes, assert_integer_variants, onnx_recipe_gates

pytestmark = pytest.mark.slow
SIZE, CLASSES = 32, 4


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
    from convert.export.recipes import ONNX_RECIPES

    out = tmp_path / "mixed"
    assert convert(model, data, out, "--variants", "float32,int8", "--onnx", "--onnx-target", "x86") == 0
    bundle = Bundle.open(out)
    # x86 without VNNI: 7-bit weights first, then the same with 8-bit ones, before calibrations and float layers
    onnx_attempts = [a.what for a in bundle.manifest.variants["onnx_int8"].quantization.attempts]
    assert onnx_attempts[1] == "8-bit weights, MinMax calibration", onnx_attempts
    x86 = ONNX_RECIPES["x86"]
    assert bundle.manifest.variants["onnx_int8"].recipe in (x86.describe(), x86.full_weights().describe())
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
            assert sum(report.float_op_types.values()) == len(report.float_layers)  # and which kinds of op
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


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Real scans: scikit-learn's copy of the UCI handwritten digits (1,797 images, 10 classes, shipped
    inside the package), written as class folders at 48 px."""
    from tests.support.realimages import write_digits

    return write_digits(tmp_path_factory.mktemp("digits") / "data")


@pytest.fixture(scope="module")
def digits_bundle(digits, tmp_path_factory) -> tuple[Path, Path]:
    """(run, bundle): ResNet50 (a frozen seeded backbone, the head trained 4 epochs on the real scans, on the
    backbone's features computed once, as the README trains), converted with dynamic, int8 and onnx_int8 for
    x86 without VNNI (the recipe that once fell over on an AVX2 machine's model)."""
    from convert.training.model import write_stand_in_weights
    from edge.cli import main

    tmp = tmp_path_factory.mktemp("digits-resnet50")
    weights = write_stand_in_weights(tmp / "w.weights.h5", 48)
    run = tmp / "run"
    train = ["train", "--data", str(digits), "--out", str(run), "--weights", str(weights), "--img-size", "48"]
    cache = ["--feature-cache", str(tmp / "features"), "--feature-passes", "1"]  # 39 s against 66 s (VNNI, alone)
    assert main([*train, "--epochs", "4", *cache]) == 0
    out = tmp / "digits"
    convert = ["convert", str(run), "--out", str(out), "--variants", "dynamic,int8", "--onnx", "--no-probes"]
    assert main([*convert, "--onnx-target", "x86"]) == 0
    return run, out


def test_resnet50_on_real_scans_quantizes_to_full_integer(digits_bundle):
    """With the head's BatchNorms re-estimated and folded, dynamic, int8 and onnx_int8 (x86 recipe) pass the
    gate with at most 2/3/3 operations in float, and the exported file's arithmetic is ResNet50's own."""
    from convert.export.recipes import ONNX_RECIPES

    run, out = digits_bundle
    bundle = Bundle.open(out)
    assert bundle.manifest.keras_accuracy["top1"] > 0.3  # it learned (chance is 0.1)
    assert_integer_variants(bundle, {"dynamic": 2, "int8": 3, "onnx_int8": 3})
    x86 = ONNX_RECIPES["x86"]  # 7-bit weights, or 8-bit ones where those missed the gate
    assert bundle.manifest.variants["onnx_int8"].recipe in (x86.describe(), x86.full_weights().describe())
    # the arithmetic the bench's floor uses, counted on the exported file, is ResNet50's own
    gflop, layers = keras_arithmetic(run / "model.keras")
    assert layers == 53 + 3 and 0.35 < gflop < 0.45  # 53 convolutions and the head's 3 dense layers, at 48 px
    assert open_engine(bundle, "litert", "int8").flops() / 1e9 == pytest.approx(gflop, rel=0.01)


@pytest.fixture(scope="module")
def digits_recipes(digits, digits_bundle, tmp_path_factory) -> dict:
    """The digits' ResNet50 quantized with every target's recipe and gated on this machine's CPU."""
    from tests.support.realimages import load_digit_images

    images, labels = load_digit_images(48)
    return onnx_recipe_gates(digits_bundle[1], images, labels, tmp_path_factory.mktemp("recipes"))


def test_every_cpu_target_recipe_passes_on_real_scans(digits_recipes):
    """Each target's recipe, quantized and gated on this machine's CPU; what another CPU computes with the same
    file is the next test's business."""
    assert_every_recipe_passes(digits_recipes)


QEMU_CPU = "Haswell-v4"  # AVX2 + FMA, no AVX-512, no VNNI: the CPU that the x86 recipe is for
EMULATED = """
import json, sys
import numpy as np, onnxruntime as ort
from edge.system.cpu import x86_int8_dot_product
from edge.runtime.onnx import OnnxEngine
from tests.support.realimages import load_digit_images

images = load_digit_images(48, int(sys.argv[1]))[0]
out = {"int8_dot_product": x86_int8_dot_product()}
for name in sys.argv[2:]:
    engine = OnnxEngine(name, threads=1)
    out[name] = np.concatenate([engine.infer(x[None]) for x in images]).tolist()
plain = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])  # no option: u8 x s8 kernels
out["plain"] = np.concatenate([plain.run(None, {plain.get_inputs()[0].name: x[None]})[0] for x in images]).tolist()
print(json.dumps(out))
"""


def test_an_avx2_cpu_computes_what_the_gate_measured(digits_recipes):
    """The int8 ONNX files run by smartbin's engine on an emulated AVX2 CPU (qemu-user, no VNNI) give this
    machine's outputs: 7-bit weights cannot saturate vpmaddubsw's 16-bit pair sums, and 8-bit ones (the VNNI
    recipe, or the x86 one's fallback) run as u8 x u8. The same 8-bit file in a plain session, which uses
    the saturating u8 x s8 kernels there, does not: the emulation runs the AVX2 kernels for real."""
    import shutil

    qemu = shutil.which("qemu-x86_64")
    if qemu is None or not is_x86():
        pytest.skip("needs qemu-user (tests/system-packages.sh installs it) on an x86 machine")
    files = [str(digits_recipes["x86-vnni"][0]), str(digits_recipes["x86"][0])]
    count = 8  # ~0.25 s an image emulated; saturation moved 19 of 20 images by more than 5/255 (measured)
    command = [qemu, "-cpu", QEMU_CPU, sys.executable, "-c", EMULATED, str(count), *files]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    emulated = json.loads(result.stdout.splitlines()[-1])
    assert emulated["int8_dot_product"] is False  # the engine saw the emulated CPU, not the host's flags

    from edge.runtime.onnx import OnnxEngine
    from tests.support.realimages import load_digit_images

    images = load_digit_images(48, count)[0]
    for name in files:
        here = np.concatenate([OnnxEngine(Path(name), threads=1).infer(x[None]) for x in images])
        there = np.array(emulated[name], np.float32)
        # the same integers; only the output softmax's float exp differs between AVX2 and AVX-512, by steps
        assert (there.argmax(1) == here.argmax(1)).all() and np.abs(there - here).max() <= 5 / 255, name
    plain = np.array(emulated["plain"], np.float32)
    here = np.concatenate([OnnxEngine(Path(files[0]), threads=1).infer(x[None]) for x in images])
    assert np.abs(plain - here).max() > 5 / 255, "the emulated CPU did not saturate: not AVX2's kernels"
