"""Input pipeline and radiograph-appropriate augmentation.

Images arrive already preprocessed by the shared ``model.preprocessing`` path
(one channel kept in memory). Augmentation is geometric (rotation, shift and a
zoom whose height and width differ: patient positioning, framing, and the
aspect ratio the squash to a square changed) and photometric (contrast,
brightness, gamma, blur/sharpen, noise: differences between machines and
exposures). No horizontal flip: the heart sits on the left, and a mirrored
chest is not a realistic input.

The augmentation runs in NumPy/OpenCV, one affine warp per image, in
``keras.utils.PyDataset`` worker threads (on TensorFlow; one worker on other
backends, see ``training.train._fit``): about four times cheaper than Keras's
three geometric layers in ``tf.data`` (293 against 73 images/s alone, measured
on this 2-core machine), though a full fine-tune is bound by the training step
either way (8.9 against 9.6 images/s in ``fit``). Model v2.1 was trained with
it (through ``tf.data.Dataset.from_generator``); since v3 it feeds ``fit`` as a
PyDataset, so the same pipeline trains on any Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np


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


def mixup(images, labels, weights, alpha: float, rng: np.random.Generator):
    """Mix each example with another of the batch: x = λ·x1 + (1-λ)·x2, λ ~ Beta(α, α); labels and weights alike."""
    lam = rng.beta(alpha, alpha, len(labels)).astype(np.float32)
    order = rng.permutation(len(labels))

    def mix(a):
        per_example = lam.reshape((-1,) + (1,) * (a.ndim - 1))
        return per_example * a + (1 - per_example) * a[order]

    return mix(images), mix(labels), mix(weights)


class Batches(keras.utils.PyDataset):
    """Batched ((B, S, S, 3) float32, labels (B, 1), sample weights (B,)) for ``fit``, on any Keras backend.

    Training batches are reshuffled each epoch and augmented (and mixed up when ``mixup_alpha`` > 0) with a
    stream seeded by (seed, pass, batch), so worker threads fetching batches out of order never change what a
    batch holds. The pass counter is this dataset's, not Keras's epoch: it also counts the reset some backends do
    before the first epoch, runs on across fits, and restarts when a stopped run resumes (as v2.1's generator did).
    Class weights become per-sample weights so that mixup can mix them too.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, training: bool, seed: int = 42,
                 class_weights: dict | None = None, mixup_alpha: float = 0.0, geometry: Geometry = Geometry(),
                 workers: int = 1):
        super().__init__(workers=workers)
        self.images, self.labels, self.batch_size = images, labels.astype(np.float32), batch_size
        self.weights = np.ones(len(labels), np.float32)
        if class_weights:
            self.weights = np.array([class_weights[int(c)] for c in labels], np.float32)
        self.training, self.seed, self.mixup_alpha, self.geometry = training, seed, mixup_alpha, geometry
        self.epoch = 0
        self.order = self._epoch_order()

    def _epoch_order(self):
        if not self.training:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._epoch_order()

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        x, y, w = self.images[rows], self.labels[rows], self.weights[rows]
        if self.training:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = augment_batch(x, rng, self.geometry)
            if self.mixup_alpha > 0:
                x, y, w = mixup(x, y, w, self.mixup_alpha, rng)
        return np.repeat(x, 3, axis=-1), y[:, None], w
