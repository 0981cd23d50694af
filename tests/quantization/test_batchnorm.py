"""BatchNorm made quantization-friendly (convert/quantization/batchnorm.py) on real scans: re-estimated
statistics are the images' own, folding keeps the function, and the gate counts what the bin acts on
(convert/export/gate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.realimages import load_digit_images

SIZE = 32


@pytest.fixture(scope="module")
def scans() -> tuple[np.ndarray, np.ndarray]:
    return load_digit_images(SIZE, 256)


def _model(seed: int = 0):
    """smartbin's own classifier (resnet-mini backbone, the seed's head) with a head whose BatchNorms are
    far from identity: spread statistics, a negative scale, dead units (variance 0)."""
    import keras

    from convert.training.model import build_model

    keras.utils.set_random_seed(seed)
    model, backbone = build_model(10, SIZE, "resnet-mini", None)
    rng = np.random.default_rng(seed)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][0]
    first_norm = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    kernel, bias = dense.get_weights()
    kernel[:, 3:9], bias[3:9] = 0.0, -1.0  # ReLU units that never fire
    dense.set_weights([kernel, bias])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            gamma, beta = rng.uniform(0.2, 3, n), rng.normal(0, 1, n)
            gamma[:3] *= -1
            mean, variance = rng.uniform(0, 1, n), rng.uniform(0.01, 4, n)
            if layer is first_norm:
                mean[3:9], variance[3:9] = 0.0, 0.0  # what re-estimation measures on a dead unit
            layer.set_weights([gamma, beta, mean, variance])
    return model, backbone


def test_folding_keeps_the_function_and_leaves_no_batchnorm_in_the_head(scans):
    import keras

    from convert.quantization.batchnorm import fold_batchnorm

    model, _ = _model()
    images, _ = scans
    folded, count = fold_batchnorm(model)
    assert count == 2
    assert not [layer for layer in folded.layers if isinstance(layer, (keras.layers.BatchNormalization,))]
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.Dropout)]
    reference, result = np.asarray(model(images, training=False)), np.asarray(folded(images, training=False))
    assert np.abs(reference - result).max() < 1e-5
    assert (reference.argmax(1) == result.argmax(1)).all()
    # a unit that never varied gets no weight at all (not 1/sqrt(epsilon)): its constant went to the bias
    dense = [layer for layer in folded.layers if isinstance(layer, keras.layers.Dense)]
    assert np.abs(dense[0].get_weights()[0][:, 3:9]).max() < np.abs(dense[0].get_weights()[0]).max()


def test_reestimation_sets_the_statistics_the_images_give_and_leaves_a_kept_backbone_alone(scans):
    import keras

    from convert.quantization.batchnorm import reestimate_batchnorm

    model, backbone = _model(1)
    backbone.trainable = False  # as training leaves a borrowed backbone
    images, labels = scans
    before = [np.asarray(w).copy() for w in backbone.weights]
    weights = [np.asarray(w).copy() for w in model.trainable_weights]
    batches = [(images[i : i + 32], labels[i : i + 32]) for i in range(0, 256, 32)]
    assert reestimate_batchnorm(model, iter(batches), 8, keep=backbone) == 8
    # the backbone ran as it is (inference mode): the head's first BatchNorm now holds its input's own
    # mean and the mean of the batches' variances, with Dropout off
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    first_dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][0]
    inputs = keras.Model(model.inputs, first_dense.output)
    features = [np.asarray(inputs(x, training=False), np.float64) for x, _ in batches]
    assert np.allclose(norms[0].moving_mean, np.mean([f.mean(0) for f in features], 0), rtol=1e-4, atol=1e-4)
    assert np.allclose(norms[0].moving_variance, np.mean([f.var(0) for f in features], 0), rtol=1e-3, atol=1e-4)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, backbone.weights))
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(weights, model.trainable_weights))  # no learning
    assert all(layer.momentum == 0.9 and layer.trainable for layer in norms)  # as they were
    assert not any(layer.trainable for layer in backbone.layers)
    assert all(layer.rate == 0.5 for layer in model.layers if isinstance(layer, keras.layers.Dropout))


def test_the_gate_counts_agreement_where_the_bin_acts():
    from convert.export.gate import gate

    keras_probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.52, 0.48]] * 50)
    probs = keras_probs.copy()
    probs[1::4] = [0.45, 0.55]  # near-ties flipped: the vote sends those to the default bin either way
    # labelled so that those flips make as many right as wrong (the first 16 are the held-out split)
    labels = np.array([[0, k % 2, 1, 0] for k in range(50)]).ravel()
    result = gate("int8", probs, keras_probs, labels, 16, 0.6)
    assert result.passed and result.agreement == 1.0 and result.overall_agreement == 0.75
    assert (result.images, result.agreement_images, result.confident_images) == (16, 200, 100)
    assert result.top1 == result.keras_top1 and result.top1_drop == 0
    probs[18] = [0.8, 0.2]  # one confident flip in 100
    assert gate("int8", probs, keras_probs, labels, 16, 0.6).passed
    probs[22] = [0.8, 0.2]  # two: 98 %
    result = gate("int8", probs, keras_probs, labels, 16, 0.6)
    assert not result.passed and result.agreement == 0.98 and result.top1_drop == pytest.approx(0.01)
    # where the near-ties' flips all go wrong, plain top-1 falls 25 points, and the bin sorts what it sorted
    result = gate("int8", probs, keras_probs, np.array([0, 0, 1, 0] * 50), 16, 0.6)
    assert result.top1_drop == pytest.approx(0.01) and result.top1 < result.keras_top1
    # a variant that agrees everywhere but is less sure: 4 of Keras' sure and right items fall under 0.6,
    # which the vote sends to the default bin: 2 points fewer sorted right
    probs = keras_probs.copy()
    probs[[0, 4, 8, 12]] = [0.58, 0.42]
    result = gate("int8", probs, keras_probs, labels, 16, 0.6)
    assert result.agreement == 1.0 and result.overall_agreement == 1.0
    assert not result.passed and result.top1_drop == pytest.approx(0.02)
    # float variants must agree everywhere: one near-tie flipped in 16 fails them
    float_probs = keras_probs[:16].copy()
    float_probs[1] = [0.45, 0.55]
    result = gate("float16", float_probs, keras_probs[:16], labels[:16], 16, 0.6)
    assert not result.passed and result.agreement == 15 / 16 and result.confident_images == 16


def test_the_agreement_set_fills_up_with_spare_images_then_copies(scans):
    from convert.export.gate import gate_images

    images, labels = scans
    held_out, spare = (images[:20], labels[:20]), (images[20:60], labels[20:60])
    grown, grown_labels = gate_images(held_out, spare, 100, seed=0)
    assert len(grown) == len(grown_labels) == 100 and grown.dtype == np.uint8
    assert np.array_equal(grown[:20], held_out[0]) and np.array_equal(grown[20:60], spare[0])
    assert np.array_equal(grown_labels[:60], labels[:60]) and np.array_equal(grown_labels[60:], labels[:40])
    assert not np.array_equal(grown[60:], images[:40])  # copies, not the same images again
    assert len(gate_images(held_out, spare, 10, seed=0)[0]) == 20  # never fewer than the held-out images


def test_the_onnx_recipe_follows_the_cpu():
    from convert.export.recipes import onnx_recipe
    from edge.errors import SmartbinError

    vnni = onnx_recipe(flags={"avx2", "avx512f", "avx512_vnni"}, machine="x86_64")
    avx2 = onnx_recipe(flags={"avx2", "fma"}, machine="x86_64")
    arm = onnx_recipe(machine="aarch64")
    assert (vnni.activations, vnni.reduce_range) == ("QUInt8", False)
    assert (avx2.activations, avx2.reduce_range) == ("QUInt8", True)
    assert (arm.activations, arm.reduce_range) == ("QInt8", False)
    assert all(r.per_channel for r in (vnni, avx2, arm))
    assert "saturate" in avx2.describe() and "VNNI" in vnni.describe()
    assert onnx_recipe("arm64") == arm
    with pytest.raises(SmartbinError, match="allowed: auto, x86-vnni, x86, arm64"):
        onnx_recipe("riscv")
    # 7-bit weights fall back to 8-bit ones (u8 x u8 on such a CPU); the 8-bit recipes have nowhere to go
    wider = avx2.full_weights()
    assert (wider.activations, wider.reduce_range, wider.target) == ("QUInt8", False, avx2.target)
    assert "8-bit" in wider.describe() and "x64quantprecision" in wider.describe()
    assert vnni.full_weights() is None and arm.full_weights() is None
    assert onnx_recipe(flags={"avx2", "avx_vnni"}, machine="x86_64") == vnni  # AVX-VNNI (no AVX-512)
    assert onnx_recipe(flags={"avx512f", "amx_int8"}, machine="x86_64") == vnni


def test_a_report_never_counts_more_float_operations_than_the_model_has():
    from pydantic import ValidationError

    from edge.formats.bundle import QuantizationReport

    fine = QuantizationReport(calibration="MinMax", float_layers=["a", "b"], quantized_ops=2)
    assert fine.float_layers == ["a", "b"]
    with pytest.raises(ValidationError, match="3 operations in float of a model of 2"):
        QuantizationReport(calibration="MinMax", float_layers=["a", "b", "c"], quantized_ops=2)
