"""BatchNorm made quantization-friendly: statistics re-estimated on the user's images, then folded away.

A briefly trained network's moving statistics lag its weights (and the head's were taken with Dropout
on): an activation whose real spread is far from its BatchNorm's variance widens the int8 range of
everything after it. Re-estimation (NNCF's BatchNorm adaptation) runs the model on training images in
training mode, weights untouched, and sets each BatchNorm's statistics to their average over those
batches, with Dropout off so they are the statistics inference sees. A frozen, borrowed backbone is
left as it is (``keep``): its features were learned with its own statistics.

Folding: a BatchNorm after a convolution is folded by both converters; one after ``Dense`` + ReLU (the
head) is not, and stays as a float multiply and add between quantized layers (or, folded by TFLite into
the next layer, as weights scaled up to 1/sqrt(epsilon)). It is an exact affine map, so it folds into
the ``Dense`` layers on either side of it (Dropout between them is the identity at inference).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import keras
import numpy as np
from keras import layers

log = logging.getLogger(__name__)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        found += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return found


def reestimate_batchnorm(model: keras.Model, batches: Iterable, count: int, keep: keras.Model | None = None) -> int:
    """Set every BatchNorm's moving statistics (but those inside ``keep``, which run as they are) to their
    mean over ``count`` batches of ``(images, labels)`` run in training mode (a cumulative average, not a
    decaying one); weights and trainable flags are left as they were. Returns the number of batches used."""
    kept = {id(layer) for layer in _all_layers(keep)} if keep is not None else set()
    norms = [n for n in _all_layers(model) if isinstance(n, layers.BatchNormalization) and id(n) not in kept]
    drops = [layer for layer in _all_layers(model) if isinstance(layer, layers.Dropout)]
    saved = [(n.trainable, n.momentum) for n in norms], [d.rate for d in drops]
    used = 0
    try:
        for layer in norms:
            layer.trainable = True  # a frozen BatchNorm runs in inference mode and learns nothing
        for layer in drops:
            layer.rate = 0.0
        for images, *_ in batches:
            if used == count:
                break
            for layer in norms:  # the k-th batch weighs 1/k: the mean over all batches so far
                layer.momentum = used / (used + 1)
            model(images, training=True)
            used += 1
    finally:
        for layer, (trainable, momentum) in zip(norms, saved[0]):
            layer.trainable, layer.momentum = trainable, momentum
        for layer, rate in zip(drops, saved[1]):
            layer.rate = rate
    log.info("BatchNorm statistics of %d layers re-estimated on %d batches", len(norms), used)
    return used


def _chain(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The model's top-level layers after its input when they form a single chain (smartbin's models do)."""
    chain = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    for before, layer in zip([None, *chain], chain):
        nodes = layer._inbound_nodes  # the calls in this model (the graph has no public walk)
        inbound = [t._keras_history[0] for t in nodes[0].input_tensors] if len(nodes) == 1 else None
        if before is not None and inbound != [before]:
            return None
    return chain


def _affine(norm: layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of the BatchNorm at inference: y = scale * x + shift. An input that never varied (a
    ReLU unit that is always 0) gets scale 0 and its constant output in the shift, so folding does not
    put a 1/sqrt(epsilon) weight on it that would set the whole layer's int8 weight range."""
    mean, variance = (np.asarray(v, np.float64) for v in (norm.moving_mean, norm.moving_variance))
    gamma = np.asarray(norm.gamma, np.float64) if norm.scale else np.ones_like(mean)
    beta = np.asarray(norm.beta, np.float64) if norm.center else np.zeros_like(mean)
    scale = np.where(variance > 0, gamma / np.sqrt(variance + norm.epsilon), 0.0)
    return scale, beta - mean * scale


def _weights(layer: layers.Dense) -> list[np.ndarray]:
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


def _rebuilt(layer: layers.Dense, kernel: np.ndarray, bias: np.ndarray) -> layers.Dense:
    config = {**layer.get_config(), "kernel_regularizer": None}
    dense = layers.Dense.from_config(config)
    dense.build((None, kernel.shape[0]))
    dense.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return dense


def fold_batchnorm(model: keras.Model) -> tuple[keras.Model, int]:
    """The same function with every top-level BatchNorm between two ``Dense`` layers (Dropout between them
    allowed) folded into them, and Dropout left out: (new model, BatchNorms folded). Other layers are
    shared with ``model``, not copied. A model whose top level is not a chain is returned as it is.

    After ``Dense`` + ReLU, ``scale * relu(z) = sign(scale) * relu(|scale| * z)``: the magnitude goes into
    the first layer's output channels (per-channel int8 weights take any column scale for free, and the
    activation between them gets BatchNorm's even channel ranges), the sign and the shift into the second
    layer. Otherwise the whole affine map goes into the second layer's input rows.
    """
    chain = _chain(model)
    if chain is None:
        log.warning("%s: not a chain of layers; its BatchNorms are left to the converters", model.name)
        return model, 0
    chain = [layer for layer in chain if not isinstance(layer, layers.Dropout)]
    weights = {id(layer): _weights(layer) for layer in chain if isinstance(layer, layers.Dense)}
    folded = []
    for before, norm, after in zip(chain, chain[1:], chain[2:]):
        if not (isinstance(norm, layers.BatchNormalization) and isinstance(after, layers.Dense) and after.use_bias):
            continue
        scale, shift = _affine(norm)
        kernel, bias = weights[id(after)]
        if isinstance(before, layers.Dense) and before.use_bias and before.get_config()["activation"] == "relu":
            weights[id(before)] = [w * np.abs(scale) for w in weights[id(before)]]
            scale = np.sign(scale)
        weights[id(after)] = [scale[:, None] * kernel, shift @ kernel + bias]
        folded.append(norm)
    x = inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    for layer in chain:
        if layer in folded:
            continue
        x = (_rebuilt(layer, *weights[id(layer)]) if id(layer) in weights else layer)(x)
    return keras.Model(inputs, x, name=model.name), len(folded)
