"""A bundle in two parts (`smartbin convert --split-head`): the variants are the backbone, the head beside them
in ``head.npz``, run in numpy on the device. It sorts as the whole bundle does, its head is a small file of its
own, checked like every file of a bundle, and it can be replaced while the backbone's engine keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.classifier import Classifier, reference_agreement
from edge.errors import BundleError
from edge.formats.bundle import Bundle, sha256_file
from edge.formats.head import HEAD_FILE, Head
from edge.runtime.headed import HeadedEngine


def infer(engine, images: np.ndarray) -> np.ndarray:
    """One image at a time, as the daemon runs them (an ONNX variant takes a batch of one)."""
    return np.concatenate([engine.infer(image[None]) for image in images])


def test_a_split_bundle_sorts_as_the_whole_one_on_every_engine(split_bundle_dir: Path, bundle_dir: Path):
    bundle = Bundle.open(split_bundle_dir)
    bundle.verify()
    head = bundle.head()
    assert head is not None and head.classes == len(bundle.labels) and head.activations[-1] == "softmax"
    # the head is a file of its own, its weights at 2 bytes each (ResNet50's head: 5 MB against its 25 MB int8)
    weights = sum(w.size for w in head.weights) * 2 + sum(b.size for b in head.biases) * 4
    assert weights < (split_bundle_dir / HEAD_FILE).stat().st_size < weights + 4096
    images, _ = Bundle.open(bundle_dir).acceptance()
    whole = infer(Classifier(bundle_dir, backend="litert", variant="float32").engine, images).argmax(1)
    for backend, variant in (("litert", "int8"), ("onnxruntime", "onnx"), ("onnxruntime", "onnx_int8")):
        engine = Classifier(split_bundle_dir, backend=backend, variant=variant).engine
        assert isinstance(engine, HeadedEngine) and engine.backbone.num_classes == head.features
        assert reference_agreement(engine, bundle.acceptance()) == len(bundle.acceptance()[0]), variant
        probs = infer(engine, images)
        assert probs.shape == (len(images), len(bundle.labels)) and np.allclose(probs.sum(1), 1, atol=1e-4)
        assert (probs.argmax(1) == whole).mean() >= 0.9, variant


def test_a_head_replaced_live_sorts_by_it_from_the_next_frame(split_bundle_dir: Path):
    classifier = Classifier(split_bundle_dir, backend="litert", variant="int8")
    engine, images = classifier.engine, Bundle.open(split_bundle_dir).acceptance()[0]
    backbone, before = engine.backbone, infer(engine, images)
    head = Bundle.open(split_bundle_dir).head()
    order = np.roll(np.arange(head.classes), 1)  # a head that names every class as its neighbour
    swapped = Head(head.weights[:-1] + [head.weights[-1][:, order]], head.biases[:-1] + [head.biases[-1][order]],
                   head.activations)  # fmt: skip
    engine = engine.with_head(swapped)  # as a head update serves: another engine on the loaded backbone
    after = infer(engine, images)
    assert engine.backbone is backbone  # the backbone's engine was neither loaded nor built again
    assert np.array_equal(after.argmax(1), order.argsort()[before.argmax(1)])
    assert engine.features is not None and engine.features.shape == (1, head.features)  # the last frame's


def test_a_damaged_or_foreign_head_is_refused_naming_the_file_and_the_check(split_bundle_dir: Path, tmp_path: Path):
    import shutil

    copy = Path(shutil.copytree(split_bundle_dir, tmp_path / "bundle"))
    head = copy / HEAD_FILE
    data = bytearray(head.read_bytes())
    data[-100] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{HEAD_FILE}: sha256 check failed"):
        Bundle.open(copy).verify()
    # a head whose layers do not chain, vouched for by its manifest: refused by its own check
    good = Bundle.open(split_bundle_dir).head()
    Head(good.weights[:1] + good.weights[2:], good.biases[:1] + good.biases[2:], good.activations[1:]).save(head)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["head"].update(sha256=sha256_file(head), size=head.stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{HEAD_FILE}: head check failed: layer 1"):
        Classifier(copy, backend="litert", variant="int8")
