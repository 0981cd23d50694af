"""The converter on a real small model: every variant, the gates, ONNX, tampering, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.errors import BundleError
from edge.formats.bundle import Bundle
from edge.formats.dataset import load_dataset
from edge.formats.variants import BY_NAME
from edge.runtime import load_model_file, open_engine
from edge.vision.preprocess import load_images
from tests.support import keras_arithmetic

pytestmark = pytest.mark.slow


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def test_bundle_has_every_variant_with_manifest(bundle_dir: Path):
    m = manifest(bundle_dir)
    assert set(m["variants"]) == {"float32", "float16", "dynamic", "int8", "onnx", "onnx_int8"}
    assert m["format_version"] == 1 and m["input"]["dtype"] == "uint8" and m["input"]["color"] == "RGB"
    assert m["input"]["height"] == 64 and len(m["labels"]) == 4
    assert {"tensorflow", "ai-edge-litert", "onnxruntime"} <= set(m["versions"])
    for name, entry in m["variants"].items():
        assert (bundle_dir / entry["file"]).stat().st_size == entry["size"]
        assert entry["gate"]["passed"] and not entry["gate"]["accepted_despite_failure"], name
        assert entry["conversion_s"] > 0
    sizes = {k: v["size"] for k, v in m["variants"].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]  # quantization really happened
    assert sizes["onnx_int8"] < 0.3 * sizes["onnx"]


def test_every_variant_loads_and_agrees_with_keras(bundle_dir: Path, run_dir: Path, dataset_dir: Path):
    from convert.training.model import load_model

    bundle = Bundle.open(bundle_dir)
    samples = load_dataset(dataset_dir).samples[:16]
    images = load_images(samples, 64, 64)
    keras_probs = np.asarray(load_model(run_dir / "model.keras")(images, training=False))
    for variant in bundle.variant_names():
        engine = open_engine(bundle, "auto", variant)
        assert engine.input_dtype == np.uint8  # what the manifest says every variant takes
        probs = np.concatenate([engine.infer(x[None]) for x in images])
        agreement = (probs.argmax(1) == keras_probs.argmax(1)).mean()
        assert agreement >= 0.99, (variant, agreement)
        if variant == "onnx":
            np.testing.assert_allclose(probs, keras_probs, atol=1e-4)
        if variant == "int8":
            details = engine.interpreter.get_output_details()[0]
            assert details["dtype"] == np.uint8
        assert engine.backend == ("onnxruntime" if variant.startswith("onnx") else "litert")


def test_the_gates_reference_is_the_models_own_output_in_batches_of_any_size(run_dir: Path, dataset_dir: Path):
    """convert/training/model.predict (one compiled function, not model.predict's tf.data iterator) gives what the
    model gives, with a last batch smaller than the others."""
    from convert.training.model import load_model, predict

    model = load_model(run_dir / "model.keras")
    images = load_images(load_dataset(dataset_dir).samples[:19], 64, 64)
    expected = np.asarray(model(images, training=False))
    np.testing.assert_allclose(predict(model, images, batch_size=8), expected, atol=1e-5)


def test_int8_is_integer_inside(bundle_dir: Path, run_dir: Path):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle_dir / "int8.tflite"))
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in dtypes and interpreter.get_input_details()[0]["dtype"] == np.uint8
    graph = onnx.load(str(bundle_dir / "model_int8.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ: ONNX Runtime fuses these into int8 kernels
    weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    _, layers = keras_arithmetic(run_dir / "model.keras")  # each convolution and dense layer's weights in int8
    assert len(weights) >= layers and graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda b: (b / "int8.tflite").unlink(), "int8.tflite: missing file listed in the manifest"),
        (
            lambda b: (b / "int8.tflite").write_bytes((b / "int8.tflite").read_bytes()[:-1] + b"\0"),
            "int8.tflite: sha256 check failed",
        ),
        (
            lambda b: (b / "int8.tflite").write_bytes((b / "int8.tflite").read_bytes()[:1000]),
            "int8.tflite: size check failed",
        ),
        (lambda b: _edit_manifest(b, lambda m: m["labels"].pop()), "int8.tflite: label count check failed"),
        (
            lambda b: _edit_manifest(b, lambda m: m["input"].update(height=96, width=96)),
            "int8.tflite: input shape check failed",
        ),
        (lambda b: (b / "manifest.json").write_text("{broken"), "manifest.json: not valid JSON"),
        (lambda b: _edit_manifest(b, lambda m: m.update(format_version=99)), "format_version 99 is not supported"),
    ],
    ids=["missing", "sha256", "size", "labels", "input-shape", "json", "version"],
)
def test_tampering_is_refused_everywhere(bundle_copy: Path, tmp_path: Path, tamper, message, capsys):
    tamper(bundle_copy)
    with pytest.raises(BundleError, match=message.split(": ", 1)[-1].split(" (")[0]) as info:
        open_engine(Bundle.open(bundle_copy), "auto", "int8")
    assert message.split(":")[0] in str(info.value)
    image = next(bundle_copy.parent.glob("*.jpg"), None) or _write_image(tmp_path)
    assert main(["predict", str(bundle_copy), str(image), "--variant", "int8"]) == 2
    err = capsys.readouterr().err
    assert message.split(": ", 1)[-1].split(" (")[0] in err and "Traceback" not in err


def _write_image(tmp_path: Path) -> Path:
    from edge.formats.images import write_jpeg

    path = tmp_path / "x.jpg"
    write_jpeg(path, np.zeros((32, 32, 3), np.uint8))
    return path


def _edit_manifest(bundle: Path, change) -> None:
    m = manifest(bundle)
    change(m)
    (bundle / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def test_predict_with_bundle_through_each_backend(bundle_dir: Path, dataset_dir: Path, capsys):
    image = str(dataset_dir / "img_5.jpg")
    label = int((dataset_dir / "img_5.txt").read_text().split(",")[1])
    for args in (["--backend", "litert", "--variant", "int8"], ["--backend", "onnxruntime"], ["--threads", "1"]):
        assert main(["predict", str(bundle_dir), image, "--json", *args]) == 0
        assert json.loads(capsys.readouterr().out)["label_index"] == label, args


def test_evaluate_json_matches_the_dataset(bundle_dir: Path, dataset_dir: Path, capsys):
    assert main(["evaluate", str(bundle_dir), "--data", str(dataset_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 96 and result["reference"] == "float32"
    assert set(result["variants"]) == {"float32", "float16", "dynamic", "int8", "onnx", "onnx_int8"}
    assert result["variants"]["onnx"]["backend"] == result["variants"]["onnx_int8"]["backend"] == "onnxruntime"
    for variant, figures in result["variants"].items():
        # the float variants are the same arithmetic; a quantized one's gate counts the images either model is
        # sure of, and this synthetic set has a few near-ties among its 96, which a quantized model may flip
        assert figures["top1"] > 0.8 and figures["agreement"] >= (0.95 if BY_NAME[variant].quantized else 0.99), variant


def test_gate_fails_a_variant_made_to_disagree(run_dir: Path, tmp_path: Path, monkeypatch, capsys):
    """float16 is converted from a copy of the model whose output classes are rotated."""
    import keras

    import convert.export.exporter as export

    real = export.export_saved_model

    def disagreeing(model, path):
        wrong = keras.models.clone_model(model)
        wrong.set_weights(model.get_weights())
        dense = wrong.get_layer("probabilities")
        kernel, bias = dense.get_weights()
        dense.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
        return real(wrong, path)

    monkeypatch.setattr(export, "export_saved_model", disagreeing)
    out = tmp_path / "b"
    assert main(["convert", str(run_dir), "--out", str(out), "--variants", "float16", "--no-probes"]) == 1
    err = capsys.readouterr().err
    assert "float16 missed its gate: agreement" in err and "nothing written" in err
    assert not out.exists()
    convert = ["convert", str(run_dir), "--out", str(out), "--variants", "float16", "--no-probes"]
    assert main([*convert, "--allow-accuracy-drop"]) == 0
    gate = manifest(out)["variants"]["float16"]["gate"]
    assert manifest(out)["probes"] == {}  # --no-probes
    assert not gate["passed"] and gate["accepted_despite_failure"] and gate["agreement"] < 0.5


def test_convert_refuses_to_replace_a_folder_that_is_not_a_bundle(run_dir: Path, tmp_path: Path, capsys):
    """`--out models` on the user's own folder keeps every file; a bundle folder is replaced, --force replaces any."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    convert = ["convert", str(run_dir), "--out", str(models), "--variants", "float16", "--no-probes"]
    assert main(convert) == 2
    err = capsys.readouterr().err
    assert f"--out {models}: exists and is not a bundle" in err and "--force" in err
    assert (models / "notes.txt").read_text() == "mine"
    assert main([*convert, "--force"]) == 0
    assert not (models / "notes.txt").exists() and manifest(models)["variants"].keys() == {"float16"}
    assert main(convert) == 0  # an earlier bundle is replaced without --force
    # the README's `--out models/r1` where models/ does not exist yet: made, as train makes runs/
    nested = tmp_path / "new" / "models" / "r1"
    assert main(["convert", str(run_dir), "--out", str(nested), "--variants", "float16", "--no-probes"]) == 0
    assert manifest(nested)["variants"].keys() == {"float16"} and not list(nested.parent.glob(".convert-*"))


@pytest.fixture(scope="module")
def images(dataset_dir: Path) -> np.ndarray:
    """Eight of the dataset's images: calibration for the conversions below, inputs for their outputs."""
    return load_images(load_dataset(dataset_dir).samples[:8], 64, 64)


@pytest.fixture(scope="module")
def saved_model(run_dir: Path, tmp_path_factory) -> Path:
    """The trained run's SavedModel, traced once for the conversion tests below."""
    from convert.export.writers import export_saved_model
    from convert.training.model import load_model

    return export_saved_model(load_model(run_dir / "model.keras"), tmp_path_factory.mktemp("traced") / "saved_model")


def test_one_load_per_saved_model_converts_the_same_bytes(saved_model: Path, images: np.ndarray):
    """Sharing the converter's SavedModel loads changes nothing in the files, and loads each SavedModel once."""
    from tensorflow.lite.python import lite

    from convert.export.writers import convert_tflite, one_load_per_saved_model

    variants = ("float16", "int8")  # a weight-only and a calibrated conversion
    alone = {v: convert_tflite(saved_model, v, images) for v in variants}
    loads: list[str] = []
    original = lite._load

    def counted(path, tags=None):
        loads.append(str(path))
        return original(path, tags)

    lite._load = counted
    try:
        with one_load_per_saved_model():
            shared = {v: convert_tflite(saved_model, v, images) for v in variants}
    finally:
        lite._load = original
    assert loads == [str(saved_model)]
    for variant in variants:
        assert shared[variant] == alone[variant], variant
    assert lite._load is original


def test_onnx_conversion_survives_a_failing_optimizer(
    bundle_dir: Path, images: np.ndarray, tmp_path: Path, monkeypatch
):
    """ONNX is converted without tf2onnx's graph copies; an optimizer that fails there (injected) sends it
    the careful way, and the model comes out the same."""
    from tf2onnx import optimizer

    from convert.export.writers import convert_onnx

    class Failing:
        graph_been_opt = False

        def optimize(self, graph, iteration):
            raise RuntimeError("injected")

    monkeypatch.setitem(optimizer._optimizers, "failing", Failing)
    convert_onnx(bundle_dir / "float32.tflite", tmp_path / "model.onnx")
    outputs = []
    for folder in (bundle_dir, tmp_path):
        engine = load_model_file(folder / "model.onnx", "onnxruntime")
        outputs.append(np.concatenate([engine.infer(x[None]) for x in images]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_background_conversions_write_the_same_files(saved_model: Path, images: np.ndarray, tmp_path: Path):
    """The second process converts the same bytes as this one would, peak probes included; when it dies
    (SIGKILL, before it has converted anything) its variants and the probes fall back to this process."""
    import multiprocessing
    import os
    import signal

    from convert.export.parallel import BackgroundConversions
    from convert.export.probe import write_probes
    from convert.export.recipes import onnx_recipe
    from convert.export.writers import convert_tflite

    variants = ["float32", "float16", "int8"]
    background = BackgroundConversions(variants, model_bytes=1, min_bytes=1, min_cores=1)
    try:
        background.submit(saved_model, images, tmp_path)
        assert [background.pending(v) for v in variants] == [False, True, True]
        assert sorted(variants, key=background.order) == ["float32", "int8", "float16"]  # the longest first
        assert background.result("float32") is None  # this process's to convert
        for variant in ("float16", "int8"):
            assert background.result(variant) > 0
            assert (tmp_path / f"{variant}.tflite").read_bytes() == convert_tflite(saved_model, variant, images)
        (tmp_path / "probes").mkdir()
        background.submit_probes(tmp_path / "probes", False, onnx_recipe())
        probes = background.probe_files()
        (tmp_path / "here").mkdir()
        assert probes == write_probes(tmp_path / "here", False, onnx_recipe())  # names, sizes and sha256
    finally:
        background.close()

    killed = tmp_path / "killed"
    killed.mkdir()
    background = BackgroundConversions(variants, model_bytes=1, min_bytes=1, min_cores=1)
    try:
        (worker,) = multiprocessing.active_children()
        os.kill(worker.pid, signal.SIGKILL)  # still starting TensorFlow
        worker.join()
        background.submit(saved_model, images, killed)
        assert background.result("float16") is None and background.result("int8") is None
        background.submit_probes(killed, False, onnx_recipe())
        assert background.probe_files() is None
        assert not list(killed.iterdir())
    finally:
        background.close()
    assert not BackgroundConversions(variants, model_bytes=1, min_bytes=2).pending("int8")  # small: converted here
