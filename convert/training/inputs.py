"""tf.data input pipeline with the seed's augmentations (random crop, flip, cutout) plus brightness/rotation."""

from __future__ import annotations

import keras
import tensorflow as tf

from edge.formats.dataset import LabelledImage
from edge.formats.images import read_image
from edge.vision.preprocess import RESIZE_RATIO, resize_shorter


def _decode(path: tf.Tensor, resize_to: int) -> tf.Tensor:
    """The device's own decode and resize (OpenCV, edge.vision.preprocess): training sees the pixels the
    device will see, so the validation top-1 of `smartbin train` is the Keras top-1 `convert` measures."""

    def load(p: bytes):
        return resize_shorter(read_image(p.decode()), resize_to)

    image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def _cutout(image: tf.Tensor, size: int) -> tf.Tensor:
    """Grey out one random square (the seed's cutout), at most a third of the side."""
    side = tf.random.uniform((), size // 8, size // 3 + 1, dtype=tf.int32)
    cy = tf.random.uniform((), 0, size, dtype=tf.int32)
    cx = tf.random.uniform((), 0, size, dtype=tf.int32)
    ys = tf.range(size)[:, None]
    xs = tf.range(size)[None, :]
    mask = (tf.abs(ys - cy) <= side // 2) & (tf.abs(xs - cx) <= side // 2)
    return tf.where(mask[..., None], tf.constant(128, tf.uint8), image)


def make_dataset(
    samples: list[LabelledImage],
    img_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (uint8 image, label). Decoded images are cached; augmentation runs per epoch."""
    resize_to = round(img_size * RESIZE_RATIO)
    paths = [str(s.path) for s in samples]
    labels = [s.label for s in samples]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (_decode(p, resize_to), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
    if training:
        rotate = keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed, dtype="float32")  # any policy

        def augment(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.image.random_crop(image, (img_size, img_size, 3))
            image = tf.image.random_flip_left_right(image)
            x = tf.cast(image, tf.float32)
            x = rotate(x, training=True)
            x = x + tf.random.uniform((), -25.0, 25.0)
            image = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
            return _cutout(image, img_size), label

        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:  # the centre crop of edge.vision.preprocess.center_crop: offsets (h - size) // 2
        ds = ds.map(
            lambda x, y: (tf.image.resize_with_crop_or_pad(x, img_size, img_size), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment_keyed(image: tf.Tensor, seed: tf.Tensor, img_size: int) -> tf.Tensor:
    """The crop, flip, brightness and cutout of ``make_dataset`` drawn from ``seed`` (a pair of int64):
    the same image and seed give the same pixels, so the features of an augmented image can be cached
    (rotation is left out: Keras has no stateless one)."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    image = tf.image.stateless_random_crop(image, (img_size, img_size, 3), seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    x = tf.cast(image, tf.float32) + tf.random.stateless_uniform((), seeds[2], -25.0, 25.0)
    image = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
    side = tf.random.stateless_uniform((), seeds[3], img_size // 8, img_size // 3 + 1, dtype=tf.int32)
    cy = tf.random.stateless_uniform((), seeds[4], 0, img_size, dtype=tf.int32)
    cx = tf.random.stateless_uniform((), seeds[5], 0, img_size, dtype=tf.int32)
    ys, xs = tf.range(img_size)[:, None], tf.range(img_size)[None, :]
    mask = (tf.abs(ys - cy) <= side // 2) & (tf.abs(xs - cx) <= side // 2)
    return tf.where(mask[..., None], tf.constant(128, tf.uint8), image)


def keyed_dataset(paths: list[str], keys: list[int], img_size: int, batch_size: int, pass_seed: int | None):
    """Batches of uint8 images in the given order: augmented from (``pass_seed``, each image's key), or with
    ``pass_seed`` None the validation's centre crop."""
    resize_to = round(img_size * RESIZE_RATIO)
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(keys, tf.int64)))
    if pass_seed is None:
        ds = ds.map(
            lambda p, k: tf.image.resize_with_crop_or_pad(_decode(p, resize_to), img_size, img_size),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(
            lambda p, k: _augment_keyed(
                _decode(p, resize_to), tf.stack([tf.constant(pass_seed, tf.int64), k]), img_size
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
