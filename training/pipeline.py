"""tf.data input pipeline and radiograph-appropriate augmentation.

Images arrive already preprocessed by the shared ``model.preprocessing`` path
(one channel kept in memory). Augmentation is geometric (small rotation,
shift, zoom: patient positioning) and photometric (contrast, brightness, gamma,
blur/sharpen, noise: differences between machines and exposures, the shift the
official test set shows). No horizontal flip: the heart sits on the left, and
a mirrored chest is not a realistic input.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Geometry:
    """Ranges of the geometric augmentation: positioning, framing, and the aspect ratio the squash to a square
    changed. Defaults are v1's; the v2 recipe widens them and scales height and width independently."""

    rotation: float = 0.03  # fraction of a full turn (0.03: about ±11°)
    shift: float = 0.06  # fraction of the side
    zoom_height: float = 0.12  # ± fraction
    zoom_width: float = 0.12


def build_augmenter(seed: int, geometry: Geometry = Geometry()) -> keras.Sequential:
    g = geometry
    return keras.Sequential([
        keras.layers.RandomRotation(g.rotation, fill_mode="constant", seed=seed),
        keras.layers.RandomTranslation(g.shift, g.shift, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom((-g.zoom_height, g.zoom_height), (-g.zoom_width, g.zoom_width), fill_mode="constant",
                                seed=seed + 2),
        keras.layers.RandomContrast(0.3, seed=seed + 3),
        keras.layers.RandomBrightness(0.15, value_range=(0.0, 1.0), seed=seed + 4),
    ], name="augment")


def _photometric(images, seed, batch_index):
    """Per-image gamma, blur-or-sharpen and Gaussian noise, on a batch in [0, 1]."""
    batch = tf.shape(images)[0]
    s = tf.stack([tf.constant(seed, tf.int64), 4 * tf.cast(batch_index, tf.int64)])
    gamma = tf.exp(tf.random.stateless_uniform([batch, 1, 1, 1], s, -0.35, 0.35))
    images = tf.clip_by_value(images, 0.0, 1.0) ** gamma
    blurred = tf.nn.avg_pool2d(images, 3, 1, "SAME")
    amount = tf.random.stateless_uniform([batch, 1, 1, 1], s + 1, -1.0, 1.0)  # <0 blur, >0 sharpen
    images = images + amount * (images - blurred)
    sigma = tf.random.stateless_uniform([batch, 1, 1, 1], s + 2, 0.0, 0.03)
    images = images + sigma * tf.random.stateless_normal(tf.shape(images), s + 3)
    return tf.clip_by_value(images, 0.0, 1.0)


def _mixup(images, labels, weights, alpha, seed, batch_index):
    """Mix each image with another of the batch: x = λ·x1 + (1-λ)·x2, labels and weights alike."""
    batch = tf.shape(images)[0]
    s = tf.stack([tf.constant(seed + 7, tf.int64), tf.cast(batch_index, tf.int64)])
    g1 = tf.random.stateless_gamma([batch], s, alpha)
    g2 = tf.random.stateless_gamma([batch], s + 1, alpha)
    lam = g1 / (g1 + g2)
    order = tf.random.experimental.stateless_shuffle(tf.range(batch), s + 2)

    def mix(a):
        per_example = tf.reshape(lam, tf.concat([[batch], tf.ones([tf.rank(a) - 1], tf.int32)], 0))
        return per_example * a + (1 - per_example) * tf.gather(a, order)

    return mix(images), mix(labels), mix(weights)


def make_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, training: bool, seed: int = 42,
                 class_weights: dict | None = None, mixup_alpha: float = 0.0, geometry: Geometry = Geometry()):
    """Batched ((N, S, S, 3) float32, labels (N, 1), sample weights (N,)) pipeline.

    Shuffled, augmented (and mixed up when ``mixup_alpha`` > 0) when ``training``.
    Class weights become per-sample weights so that mixup can mix them too.
    """
    weights = np.ones(len(labels), np.float32)
    if class_weights:
        weights = np.array([class_weights[int(c)] for c in labels], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32), weights))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if training:
        augmenter = build_augmenter(seed, geometry)

        def augment(i, batch):
            x, y, w = batch
            x = _photometric(augmenter(x, training=True), seed, i)
            return _mixup(x, y, w, mixup_alpha, seed, i) if mixup_alpha > 0 else (x, y, w)

        dataset = dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda x, y, w: (tf.repeat(x, 3, axis=-1), y[:, None], w), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
