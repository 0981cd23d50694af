"""Engines and the Classifier API on the real bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.classifier import Classifier
from edge.errors import SmartbinError
from edge.formats.bundle import Bundle
from edge.formats.images import read_image
from edge.runtime import available_backends, choose, open_engine
from edge.runtime.litert import LiteRTEngine
from edge.runtime.tflite import delegated_nodes
from edge.vision.preprocess import Roi, prepare
from tests.support import keras_arithmetic

pytestmark = pytest.mark.slow


def test_litert_and_onnxruntime_give_the_same_top1(bundle_dir: Path, dataset_dir: Path):
    litert = Classifier(bundle_dir, backend="litert", variant="float32")
    ort = Classifier(bundle_dir, backend="onnxruntime")
    assert ort.engine.variant == "onnx" and ort.engine.delegate == "CPUExecutionProvider"
    for i in range(12):
        frame = read_image(dataset_dir / f"img_{i}.jpg")
        a, b = litert.classify(frame), ort.classify(frame)
        assert a.label == b.label
        assert abs(a.confidence - b.confidence) < 1e-4


def test_classify_returns_top_k_bin_and_stage_latency(bundle_dir: Path, dataset_dir: Path):
    classifier = Classifier(bundle_dir, k=3)
    assert classifier.engine.variant == "int8" and classifier.engine.backend == "litert"
    prediction = classifier.classify(read_image(dataset_dir / "img_2.jpg"))
    assert prediction.label.index == 2 and prediction.bin == prediction.label.bin
    assert len(prediction.top_k) == 3 and prediction.top_k[0][1] >= prediction.top_k[1][1]
    assert set(prediction.latency_ms) == {"preprocess", "infer", "postprocess"}
    assert all(v > 0 for v in prediction.latency_ms.values())
    d = prediction.to_dict()
    assert d["label_index"] == 2 and d["top_k"][0]["label_index"] == 2


def test_any_frame_size_and_roi(bundle_dir: Path):
    classifier = Classifier(bundle_dir, roi=Roi(0.25, 0.25, 0.5, 0.5))
    for shape in ((480, 640, 3), (100, 50, 3), (64, 64, 3)):
        assert classifier.prepare(np.zeros(shape, np.uint8)).shape == (64, 64, 3)
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[50:150, 50:150] = 255  # only the ROI is white
    assert classifier.prepare(frame).min() == 255
    assert prepare(frame, 64, 64).min() == 0


def test_requested_delegate_that_fails_falls_back_with_a_warning(bundle_dir: Path, caplog):
    engine = open_engine(Bundle.open(bundle_dir), "litert", "int8", delegate="/nonexistent/libgpu_delegate.so")
    assert engine.delegate == "xnnpack" and engine.requested_delegate == "/nonexistent/libgpu_delegate.so"
    assert "could not be loaded" in caplog.text and "falling back to CPU" in caplog.text
    assert engine.info()["delegate"] == "xnnpack"
    assert engine.infer(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 4)


def test_unavailable_onnx_provider_falls_back(bundle_dir: Path, caplog):
    engine = open_engine(Bundle.open(bundle_dir), "onnxruntime", delegate="TensorrtExecutionProvider")
    assert engine.delegate == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider is not available" in caplog.text


def test_auto_choice_and_clear_refusals(bundle_dir: Path):
    bundle = Bundle.open(bundle_dir)
    assert set(available_backends()) >= {"litert", "onnxruntime"}
    assert choose(bundle) == ("litert", "int8")
    assert choose(bundle, "onnxruntime") == ("onnxruntime", "onnx")
    assert choose(bundle, "auto", "onnx_int8") == ("onnxruntime", "onnx_int8")
    with pytest.raises(SmartbinError, match="backend 'litert' cannot run variant 'onnx_int8'"):
        choose(bundle, "litert", "onnx_int8")
    assert choose(bundle, "auto", "float16") == ("litert", "float16")
    with pytest.raises(SmartbinError, match="backend 'litert' cannot run variant 'onnx'"):
        choose(bundle, "litert", "onnx")
    with pytest.raises(SmartbinError, match="unknown backend 'coral'"):
        choose(bundle, "coral")
    with pytest.raises(SmartbinError, match="variant 'int4' is not in"):
        choose(bundle, "auto", "int4")


def test_batch_inference_matches_single(bundle_dir: Path, dataset_dir: Path):
    engine = open_engine(Bundle.open(bundle_dir), "litert", "float32")
    images = np.stack([prepare(read_image(dataset_dir / f"img_{i}.jpg"), 64, 64) for i in range(3)])
    batched = engine.infer(images)
    single = np.concatenate([engine.infer(x[None]) for x in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_tensorflow_lite_fallback_backend_agrees(bundle_dir: Path, dataset_dir: Path):
    """tf.lite (workstation fallback) runs the same file as LiteRT with the same result."""
    frame = read_image(dataset_dir / "img_3.jpg")
    a = Classifier(bundle_dir, backend="tensorflow", variant="int8").classify(frame)
    b = Classifier(bundle_dir, backend="litert", variant="int8").classify(frame)
    assert a.label == b.label and abs(a.confidence - b.confidence) < 1e-6


def test_delegate_coverage_counts_the_operations_xnnpack_took(bundle_dir: Path, run_dir: Path):
    bundle = Bundle.open(bundle_dir)
    engine = open_engine(bundle, "litert", "int8", threads=1)
    nodes = engine.info()["delegate_nodes"]
    plain = open_engine(bundle, "litert", "int8", threads=1, delegate="none")
    assert plain.delegate is None and plain.delegate_nodes == {
        "delegate": None,
        "delegated": 0,
        "total": nodes["total"],
    }
    # the convolutions run in XNNPACK; the uint8 input cast does not (XNNPACK has no such operator)
    _, layers = keras_arithmetic(run_dir / "model.keras")  # every convolution and dense layer at least
    assert nodes["delegate"] == "xnnpack" and layers <= nodes["delegated"] < nodes["total"]
    assert f"({nodes['delegated']}/{nodes['total']} ops)" in engine.describe()
    zeros = np.zeros((1, 64, 64, 3), np.uint8)  # the two int8 kernel sets round differently, not more
    assert engine.infer(zeros).argmax() == plain.infer(zeros).argmax()
    # the arithmetic counted on the file is the Keras model's (the input's 1x1 colour swap aside)
    gflop, _ = keras_arithmetic(run_dir / "model.keras")
    assert engine.flops() == plain.flops() and engine.flops() / 1e9 == pytest.approx(gflop, rel=0.01)


def test_partitions_are_counted_by_walking_back_from_each_delegate_node():
    names = ["CAST", "CONV_2D", "ADD", "SOFTMAX", "DELEGATE", "DELEGATE"]
    inputs = [[0], [1, 10, -1], [2, 1], [3], [1, 10], [3]]
    outputs = [[1], [2], [3], [4], [3], [4]]
    assert delegated_nodes(names, inputs, outputs) == (3, 4)  # CONV_2D + ADD in one partition, SOFTMAX in another
    assert delegated_nodes(names[:4], inputs[:4], outputs[:4]) == (0, 4)


def test_a_delegate_that_takes_no_operation_is_not_reported_as_running(tmp_path: Path, caplog):
    """A model of operators XNNPACK lacks: the engine must say it runs on plain kernels."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.uint8)])
    def cumulative(x):
        return tf.math.cumsum(tf.cast(x, tf.float32), axis=1)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([cumulative.get_concrete_function()], cumulative)
    path = tmp_path / "cumsum.tflite"
    path.write_bytes(converter.convert())
    engine = LiteRTEngine(path, threads=1)
    assert engine.delegate is None and engine.delegate_nodes["delegated"] == 0
    assert engine.delegate_nodes["total"] == 2 and "took none of the model's 2 operations" in caplog.text
    np.testing.assert_allclose(engine.infer(np.array([[1, 2, 3, 4]], np.uint8)), [[1, 3, 6, 10]])


def test_a_tensorrt_engine_cache_appears_only_when_complete(bundle_copy: Path, monkeypatch):
    """TensorRT (faked at ONNX Runtime's provider, as on a Jetson) builds its engine into a folder of its
    own, renamed beside the model once complete; a folder left by a build that was killed is removed."""
    import os
    import subprocess

    from tests.support.fakes import FAKE_ENGINE, TENSORRT, install_slow_tensorrt

    install_slow_tensorrt(0.2, monkeypatch)
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = bundle_copy / f"trt_cache.partial-{dead.pid}"  # a build whose process died
    killed.mkdir()
    (killed / FAKE_ENGINE).write_bytes(b"half")
    alive = bundle_copy / f"trt_cache.partial-{os.getppid()}"  # another process building now
    alive.mkdir()
    engine = open_engine(Bundle.open(bundle_copy), "onnxruntime", "onnx")
    assert engine.delegate == TENSORRT
    assert (bundle_copy / "trt_cache" / FAKE_ENGINE).is_file()
    assert not killed.exists() and alive.exists()
    assert not [p for p in bundle_copy.glob("trt_cache.partial-*") if p != alive]
    built = (bundle_copy / "trt_cache" / FAKE_ENGINE).stat().st_mtime_ns
    open_engine(Bundle.open(bundle_copy), "onnxruntime", "onnx")  # the cache is used, not rebuilt
    assert (bundle_copy / "trt_cache" / FAKE_ENGINE).stat().st_mtime_ns == built
