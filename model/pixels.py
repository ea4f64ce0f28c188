"""Pixel helpers both decoders share (Pillow's in :mod:`model.preprocessing`, pydicom's in :mod:`model.dicom`),
and the one error type every decode raises. Nothing here imports another ``model`` module."""

from __future__ import annotations

import cv2
import numpy as np

WORKING_MAX_SIDE = 2048  # decoded images are area-downscaled to this at most (draft mode for JPEG)
MIN_SIDE = 32
MAX_ASPECT_RATIO = 4.0


class ImageInputError(ValueError):
    """An input that cannot be turned into a model input; ``str(err)`` is for humans."""


def channels_identical(image: np.ndarray) -> bool:
    """True when every channel of ``image`` (H, W, C) equals the first, as in every model input (a grey X-ray in
    three channels): per-pixel work on it can be done once, on one channel."""
    return all(np.array_equal(image[..., 0], image[..., k]) for k in range(1, image.shape[-1]))


def shrink_to_side(pixels: np.ndarray, max_side: int = WORKING_MAX_SIDE) -> np.ndarray:
    """Area-downscale so the longer side is at most ``max_side`` (unchanged, not copied, if already small enough).

    The default bounds memory for huge scans: the model sees 224×224 and the app
    shows at most 768 px, so nothing visible is lost.
    """
    longer = max(pixels.shape[:2])
    if longer <= max_side:
        return pixels
    scale = max_side / longer
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        pixels = pixels.astype(np.float32)
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def rescale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth or float 2-D array to uint8 by its own min/max (NaN/inf -> 0)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[:, :, :3].mean(axis=2)
    if pixels.ndim != 2:
        raise ImageInputError(f"Expected a single 2-D image, got pixel data of shape {pixels.shape}.")
    finite = np.isfinite(pixels)
    if not finite.any():
        raise ImageInputError("The image contains no valid pixel values (all NaN or infinite).")
    low, high = pixels[finite].min(), pixels[finite].max()
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    scaled = np.where(finite, (pixels - low) * np.float32(255.0 / (float(high) - float(low))), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def check_geometry(shape) -> None:
    """Refuse a (height, width) too small or too elongated for a radiograph; given the file's own size, so the
    message quotes it (not the shrunk working copy's)."""
    height, width = shape
    if min(height, width) < MIN_SIDE:
        raise ImageInputError(f"The image is only {width}×{height} pixels; a chest X-ray needs at least {MIN_SIDE} px a side.")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageInputError(f"The image is {width}×{height} pixels: too elongated to be a chest radiograph.")
