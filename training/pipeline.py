"""Input pipeline and radiograph-appropriate augmentation.

Images arrive already preprocessed by the shared ``model.preprocessing`` path
(one channel kept in memory). Augmentation is geometric (rotation, shift and a
zoom whose height and width differ: patient positioning, framing, and the
aspect ratio the squash to a square changed) and photometric (contrast,
brightness, gamma, blur/sharpen, noise: differences between machines and
exposures). No horizontal flip: the heart sits on the left, and a mirrored
chest is not a realistic input.

The augmentation runs in NumPy/OpenCV, one affine warp per image, in the
input thread: about four times cheaper than Keras's three geometric layers in
``tf.data`` (293 against 73 images/s alone, measured on this 2-core machine),
though a full fine-tune is bound by the training step either way (8.9 against
9.6 images/s in ``fit``). Model v2.1 was trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Geometry:
    """Ranges of the geometric augmentation. Defaults are v1's; the v2 recipe widens them and scales height
    and width independently."""

    rotation: float = 0.03  # fraction of a full turn (0.03: about ±11°)
    shift: float = 0.06  # fraction of the side
    zoom_height: float = 0.12  # ± fraction
    zoom_width: float = 0.12


@dataclass(frozen=True)
class Photometric:
    """Ranges of the photometric augmentation (fixed since v1)."""

    contrast: float = 0.3  # factor 1 ± this, about the image mean
    brightness: float = 0.15  # ± offset on [0, 1]
    log_gamma: float = 0.35  # gamma = exp(±this)
    sharpen: float = 1.0  # unsharp amount ±this (< 0 blurs)
    noise: float = 0.03  # Gaussian sigma up to this


def affine_matrix(size: int, angle_deg: float, scale_y: float, scale_x: float, shift_y: float, shift_x: float):
    """2×3 matrix: scale about the centre (height and width apart), rotate, then shift (pixels)."""
    centre = (size - 1) / 2
    rotation = cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0)[:, :2]
    linear = rotation @ np.diag([scale_x, scale_y])
    offset = np.array([centre + shift_x, centre + shift_y]) - linear @ np.array([centre, centre])
    return np.hstack([linear, offset[:, None]])


def augment_batch(images: np.ndarray, rng: np.random.Generator, geometry: Geometry = Geometry(),
                  photometric: Photometric = Photometric()) -> np.ndarray:
    """Augmented copy of a batch (B, S, S, 1) in [0, 1]: one affine warp, then the photometric chain, per image."""
    g, p = geometry, photometric
    batch, size = images.shape[0], images.shape[1]
    out = np.empty_like(images)
    for i in range(batch):
        matrix = affine_matrix(size, rng.uniform(-360, 360) * g.rotation,
                               1 + rng.uniform(-g.zoom_height, g.zoom_height), 1 + rng.uniform(-g.zoom_width, g.zoom_width),
                               rng.uniform(-g.shift, g.shift) * size, rng.uniform(-g.shift, g.shift) * size)
        out[i, ..., 0] = cv2.warpAffine(images[i, ..., 0], matrix, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def per_image(low, high):
        return rng.uniform(low, high, (batch, 1, 1, 1)).astype(np.float32)

    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * per_image(1 - p.contrast, 1 + p.contrast) + mean + per_image(-p.brightness, p.brightness)
    out = np.clip(out, 0.0, 1.0) ** np.exp(per_image(-p.log_gamma, p.log_gamma))
    blurred = np.stack([cv2.blur(image, (3, 3))[..., None] for image in out])
    out = out + per_image(-p.sharpen, p.sharpen) * (out - blurred)
    out = out + per_image(0.0, p.noise) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


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


def _augmented_batches(images, labels, weights, batch_size, seed, geometry):
    """A generator factory: each call is one epoch, reshuffled and re-augmented with its own seeded stream."""
    epoch = [0]

    def generate():
        rng = np.random.default_rng([seed, epoch[0]])
        epoch[0] += 1
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            index = np.sort(order[start:start + batch_size])
            x = augment_batch(images[index], rng, geometry)
            yield x, labels[index].astype(np.float32), weights[index]

    return generate


def make_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, training: bool, seed: int = 42,
                 class_weights: dict | None = None, mixup_alpha: float = 0.0, geometry: Geometry = Geometry()):
    """Batched ((B, S, S, 3) float32, labels (B, 1), sample weights (B,)) pipeline.

    Shuffled, augmented (and mixed up when ``mixup_alpha`` > 0) when ``training``.
    Class weights become per-sample weights so that mixup can mix them too.
    """
    weights = np.ones(len(labels), np.float32)
    if class_weights:
        weights = np.array([class_weights[int(c)] for c in labels], np.float32)
    size = images.shape[1]
    if training:
        signature = (tf.TensorSpec((None, size, size, 1), tf.float32), tf.TensorSpec((None,), tf.float32),
                     tf.TensorSpec((None,), tf.float32))
        dataset = tf.data.Dataset.from_generator(
            _augmented_batches(images, labels, weights, batch_size, seed, geometry),
            output_signature=signature).apply(tf.data.experimental.assert_cardinality(-(-len(labels) // batch_size)))
        if mixup_alpha > 0:
            dataset = dataset.enumerate().map(lambda i, b: _mixup(*b, mixup_alpha, seed, i))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32), weights)).batch(batch_size)
    dataset = dataset.map(lambda x, y, w: (tf.repeat(x, 3, axis=-1), y[:, None], w))
    return dataset.prefetch(2)
