"""The classifier: uint8 RGB in, ResNet preprocessing inside, the seed's head on top."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from convert.training.backbones import BACKBONES, DEFAULT_BACKBONE
from edge.errors import SmartbinError

log = logging.getLogger(__name__)


def resnet_mini(include_top: bool = False, weights: str | None = None, input_shape=(224, 224, 3)) -> keras.Model:
    """A small ResNet (conv1, then one basic residual block per stage, 16-128 filters, BatchNorm), named as
    Keras' ResNets are so the same training, fine-tuning and export apply: for boards too small for
    ResNet50, and the test suite's fast stand-in. No ImageNet weights exist for it."""
    if weights == "imagenet":
        raise SmartbinError("resnet-mini has no ImageNet weights: pass --weights none or a weights file")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1_conv")(inputs)
    x = layers.Activation("relu", name="conv1_relu")(layers.BatchNormalization(name="conv1_bn")(x))
    for stage, filters in zip((2, 3, 4, 5), (16, 32, 64, 128)):
        name, stride = f"conv{stage}_block1", 1 if stage == 2 else 2
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
            shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
        y = layers.Activation("relu", name=f"{name}_1_relu")(layers.BatchNormalization(name=f"{name}_1_bn")(y))
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
        y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
        x = layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))
    return keras.Model(inputs, x, name="resnet_mini")


BUILDERS = dict(
    zip(
        BACKBONES,
        (keras.applications.ResNet50, keras.applications.ResNet101, keras.applications.ResNet152, resnet_mini),
    )
)
# keras.applications.resnet.preprocess_input ("caffe" mode): RGB->BGR, minus ImageNet means.
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)
# The head's BatchNorm (and a from-scratch backbone's) must track its statistics within the
# few steps a small dataset gives; Keras' default of 0.99 does not.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="smartbin")
class CaffePreprocess(layers.Layer):
    """uint8 RGB -> float BGR minus the ImageNet means, as ResNet expects.

    Living inside the model means every exported variant takes plain pixels and the
    device never re-implements (or gets wrong) the normalisation.
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        # RGB->BGR as a fixed 1x1 convolution, not a flip: TFLite's int8 REVERSE_V2 kernel
        # ignores the rescale its quantized output needs and garbles the image.
        swap = ops.convert_to_tensor(np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3))
        return ops.conv(x, swap, padding="valid") - ops.convert_to_tensor(IMAGENET_BGR_MEANS, dtype="float32")


def build_model(
    num_classes: int,
    img_size: int = 224,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    dropout: float = 0.5,
    l2: float = 1e-4,
) -> tuple[keras.Model, keras.Model]:
    """Build the seed's classifier. Returns (model, backbone).

    ``weights``: "imagenet" (downloads; the users' path), None (random), or the path
    of a backbone weights file (``*.weights.h5`` or Keras' ``*_notop.h5``).
    """
    if backbone not in BUILDERS:
        raise ValueError(f"unknown backbone {backbone!r} (allowed: {', '.join(BACKBONES)})")
    local_weights = weights not in (None, "imagenet")
    base = BUILDERS[backbone](
        include_top=False,
        weights=None if local_weights else weights,
        input_shape=(img_size, img_size, 3),
    )
    if local_weights:
        log.info("loading backbone weights from %s", weights)
        base.load_weights(str(Path(weights)))
    if weights is None:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM
    inputs = keras.Input((img_size, img_size, 3), dtype="uint8", name="image")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="avg_pooling")(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(1024, activation="relu", kernel_regularizer=keras.regularizers.l2(l2))(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Dropout(dropout)(x)
    # float32 under a mixed-precision policy too: a float16 softmax rounds small probabilities to 0
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"smartbin_{backbone}"), base


def unfreeze_last_stage(backbone: keras.Model) -> int:
    """Make only the last residual stage (conv5_*) trainable, BatchNorm kept frozen. Returns layer count."""
    backbone.trainable = True
    count = 0
    for layer in backbone.layers:
        layer.trainable = layer.name.startswith("conv5_") and not isinstance(layer, layers.BatchNormalization)
        count += int(layer.trainable)
    return count


def load_model(path: str | Path) -> keras.Model:
    """Load a trained model.keras (the custom preprocess layer is registered by this module)."""
    return keras.models.load_model(str(path), compile=False)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The model's outputs on ``images``, in batches through one compiled function (any batch size).

    Not ``model.predict``: destroying its tf.data iterator waits for tf.data's autotuning thread to wake,
    which left the converter idle for 20-28 s after the gate's 500 images at 224 px (measured, every run).
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *images.shape[1:]], tf.as_dtype(images.dtype))
    run = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return np.concatenate([run(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)])


def write_stand_in_weights(path: str | Path, img_size: int, backbone: str = DEFAULT_BACKBONE, seed: int = 0) -> Path:
    """Write a seeded, randomly initialised backbone as a weights file.

    The offline stand-in for ImageNet weights (tests and the demo have no network): it is
    loaded through the same ``--weights PATH`` code as a real file, and frozen random
    ResNet features plus a trained head separate the synthetic classes.
    """
    keras.utils.set_random_seed(seed)
    _, base = build_model(2, img_size, backbone, None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base.save_weights(str(path))
    return path
