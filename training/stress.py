"""Shift-stress validation: the patient-level validation images rendered under acquisition perturbations.

The ordinary validation split comes from the same hospital, period and framing as
training, and is nearly separable: it cannot see the shift the official test
split shows (other framing, scale, aspect ratio and exposure, squashed from
originals of very different sizes). The stress set renders every validation
image a fixed number of times under a seeded composition of perturbations that
an acquisition could plausibly produce: scale, crop, aspect ratio, translation,
rotation (one affine warp), exposure (gamma, contrast, brightness), blur, noise
and a lower source resolution. Ranges and seed are fixed here, in code, and were
written down before any v2 model was trained, so the set cannot be tuned to a
model. Variants are ranked on it, and temperature and thresholds are fitted on it.

Pure numpy + OpenCV: deterministic (same seed, same pixels), never modifies its input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

STRESS_SEED = 20261122
RENDERS_PER_IMAGE = 4


@dataclass(frozen=True)
class StressRanges:
    """Half-widths or bounds of each perturbation; every render draws each one uniformly."""

    scale: tuple[float, float] = (0.80, 1.20)  # < 1 shrinks (black border), > 1 crops
    aspect: tuple[float, float] = (0.80, 1.25)  # width stretch relative to height
    rotation_degrees: float = 10.0
    translation: float = 0.08  # fraction of the side
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: tuple[float, float] = (0.7, 1.3)
    brightness: float = 0.08
    blur_sigma: tuple[float, float] = (0.0, 1.5)  # applied to half of the renders
    noise_sigma: tuple[float, float] = (0.0, 0.04)
    source_scale: tuple[float, float] = (0.35, 0.7)  # lower source resolution, applied to half of the renders


RANGES = StressRanges()


def describe() -> dict:
    """What the stress set is, for the metadata and the model card."""
    return {"seed": STRESS_SEED, "renders_per_image": RENDERS_PER_IMAGE, "ranges": asdict(RANGES)}


def _affine(image: np.ndarray, rng: np.random.Generator, r: StressRanges) -> np.ndarray:
    size = image.shape[0]
    scale = rng.uniform(*r.scale)
    aspect = rng.uniform(*r.aspect)
    angle = np.deg2rad(rng.uniform(-r.rotation_degrees, r.rotation_degrees))
    shift = rng.uniform(-r.translation, r.translation, 2) * size
    sx, sy = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([sx, sy])
    centre = np.array([size / 2, size / 2])
    offset = centre + shift - linear @ centre
    matrix = np.hstack([linear, offset[:, None]]).astype(np.float32)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _exposure(image: np.ndarray, rng: np.random.Generator, r: StressRanges) -> np.ndarray:
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(*r.gamma)
    mean = image.mean()
    image = (image - mean) * rng.uniform(*r.contrast) + mean + rng.uniform(-r.brightness, r.brightness)
    return np.clip(image, 0.0, 1.0)


def _degrade(image: np.ndarray, rng: np.random.Generator, r: StressRanges) -> np.ndarray:
    size = image.shape[0]
    if rng.random() < 0.5:
        small = max(8, int(round(size * rng.uniform(*r.source_scale))))
        image = cv2.resize(cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                           interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), max(rng.uniform(*r.blur_sigma), 1e-3))
    image = image + rng.normal(0.0, rng.uniform(*r.noise_sigma), image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def render(image: np.ndarray, rng: np.random.Generator, ranges: StressRanges = RANGES) -> np.ndarray:
    """One perturbed copy of a (S, S) float image in [0, 1]; the input is left untouched."""
    out = _affine(np.asarray(image, np.float32), rng, ranges)
    out = _exposure(out, rng, ranges)
    return _degrade(out, rng, ranges).astype(np.float32)


def stress_set(images: np.ndarray, labels: np.ndarray, renders: int = RENDERS_PER_IMAGE,
               seed: int = STRESS_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(N·renders, S, S, 1) perturbed images and their labels, from (N, S, S, 1) validation images in [0, 1].

    Image i's renders use their own generator seeded by (seed, i), so the set is
    the same whatever the batch order and however many images come before.
    """
    images = np.asarray(images)
    out = np.empty((len(images) * renders,) + images.shape[1:], np.float32)
    for i, image in enumerate(images):
        rng = np.random.default_rng([seed, i])
        for k in range(renders):
            out[i * renders + k, :, :, 0] = render(image[:, :, 0], rng)
    return out, np.repeat(np.asarray(labels), renders)
