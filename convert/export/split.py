"""`smartbin convert --split-head`: a bundle in two parts. The (BatchNorm-folded) model is cut after its pooling:
the variants are converted from the backbone, whose output is the pooled features, and the Dense layers after it
are written as ``head.npz`` (edge/formats/head.py), run in numpy on the device. A new head can then replace it
alone (kilobytes to a few megabytes against the whole bundle), without the backbone's engine being loaded or
built again."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from convert.training.features import POOLING
from edge.errors import SmartbinError
from edge.formats.bundle import HeadFile, sha256_file
from edge.formats.head import ACTIVATIONS, HEAD_FILE, Head


def split_head(model: keras.Model) -> tuple[keras.Model, Head]:
    """(the backbone, features out; the head after the pooling) of a folded chain model (its layers in order,
    as convert/quantization/batchnorm.py's fold_batchnorm gives it)."""
    names = [layer.name for layer in model.layers]
    if POOLING not in names:
        raise SmartbinError(f"--split-head: {model.name} has no {POOLING} layer to cut after")
    at = names.index(POOLING)
    weights, biases, activations = [], [], []
    for layer in model.layers[at + 1 :]:
        if isinstance(layer, layers.Dropout):  # the identity at inference
            continue
        activation = layer.get_config().get("activation") if isinstance(layer, layers.Dense) else None
        if activation not in ACTIVATIONS or not layer.use_bias:
            raise SmartbinError(
                f"--split-head: {layer.name} ({type(layer).__name__}, activation {activation}) after the pooling: "
                f"only Dense layers with a bias and {', '.join(ACTIVATIONS)} can be a head on the device"
            )
        kernel, bias = layer.get_weights()
        weights.append(kernel)
        biases.append(bias)
        activations.append(activation)
    # called again on an input of its own: the layers are shared with other models, whose graphs .output names
    x = inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    for layer in model.layers[1 : at + 1]:
        x = layer(x)
    backbone = keras.Model(inputs, x, name=f"{model.name}_backbone")
    return backbone, Head(weights, biases, activations)


def write_head(head: Head, folder: Path) -> HeadFile:
    """``head.npz`` in ``folder``, and its manifest entry."""
    path = folder / HEAD_FILE
    head.save(path)
    return HeadFile(file=HEAD_FILE, sha256=sha256_file(path), size=path.stat().st_size, features=head.features)
