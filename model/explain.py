"""Class activation maps: Grad-CAM, Grad-CAM++ and Score-CAM as small variants of one base.

One base (:class:`CamExplainer`) owns the shared work: the model's forward
pass (:mod:`model.runtime`, compiled once, on LiteRT in the app) returns the
target layer's activations, the gradients of the PNEUMONIA logit with respect to
them, and the logit; then weighting, ReLU, upsampling and normalisation. Each
method only supplies its channel weights. The formulas follow tf-keras-vis (the
tests check ours against it); tf-keras-vis itself rebuilds the model on every
call (~0.5 s here), too slow for an interactive app.
"""

from __future__ import annotations

import cv2
import numpy as np

from model.artifact import CLASS_NAMES
from model.predictor import calibrated_probability

SCORECAM_CHANNELS = 32  # the most active channels used as Score-CAM masks


def _gradcam_weights(explainer, image, activations, grads, logit, sign):
    return grads.mean(axis=(0, 1))


def _gradcam_plus_plus_weights(explainer, image, activations, grads, logit, sign):
    score = np.exp(logit)  # Grad-CAM++'s exponential-score trick, as in tf-keras-vis
    first = score * grads
    second = first * grads
    third = second * grads
    global_sum = activations.sum(axis=(0, 1), keepdims=True)
    denominator = 2.0 * second + third * global_sum
    alphas = second / np.where(second == 0.0, denominator + 1.0, denominator)
    norm = alphas.sum(axis=(0, 1), keepdims=True)
    alphas = alphas / np.where(norm == 0.0, 1.0, norm)
    return (np.maximum(first, 0.0) * alphas).sum(axis=(0, 1))


def _scorecam_weights(explainer, image, activations, grads, logit, sign):
    """Weight each of the most active channels by the target score of the image masked by it."""
    channels = np.argsort(activations.mean(axis=(0, 1)))[::-1][:SCORECAM_CHANNELS]
    size = image.shape[0]
    masks = np.stack([_normalise(cv2.resize(activations[:, :, c], (size, size), interpolation=cv2.INTER_LINEAR))
                      for c in channels])
    scores = explainer.target_probability(image[None] * masks[:, :, :, None], sign)
    weights = np.zeros(activations.shape[-1], np.float32)
    weights[channels] = scores
    return weights


CAM_METHODS = {
    "gradcam": _gradcam_weights,
    "gradcam++": _gradcam_plus_plus_weights,
    "scorecam": _scorecam_weights,
}
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}


def _normalise(cam: np.ndarray) -> np.ndarray:
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam, dtype=np.float32)


class CamExplainer:
    """Explains one model's decisions from its forward pass (:mod:`model.runtime`), on either engine."""

    def __init__(self, forward):
        self._forward = forward  # images -> ForwardPass (activations and gradients included)

    @classmethod
    def for_predictor(cls, predictor) -> CamExplainer:
        """Shares the predictor's forward pass: one loaded network serves both."""
        return cls(predictor.run)

    def target_probability(self, images: np.ndarray, sign: float = 1.0, chunk: int = 8) -> np.ndarray:
        """Probability of the target class (sign +1: PNEUMONIA, -1: NORMAL) for a batch.

        Run in chunks: a batch of 32 at 224 px costs ~300 MB of activations at once.
        """
        images = np.asarray(images, np.float32)
        logits = np.concatenate([self._forward(images[i:i + chunk]).logits for i in range(0, len(images), chunk)])
        return calibrated_probability(logits * sign, 1.0)

    def raw_cam(self, image: np.ndarray, method: str = "gradcam", target: str = CLASS_NAMES[1]) -> np.ndarray:
        """The map at the layer's resolution, after ReLU, before resizing and normalising."""
        if method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose one of: {', '.join(CAM_METHODS)}")
        if target not in CLASS_NAMES:
            raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(CLASS_NAMES)}")
        sign = 1.0 if target == CLASS_NAMES[1] else -1.0
        result = self._forward(np.asarray(image, np.float32)[None])
        activations, grads = result.activations[0], sign * result.gradients[0]
        weights = CAM_METHODS[method](self, image, activations, grads, sign * float(result.logits[0]), sign)
        return np.maximum((activations * weights).sum(axis=-1), 0.0).astype(np.float32)

    def explain(self, image: np.ndarray, method: str = "gradcam", target: str = CLASS_NAMES[1],
                output_size: tuple[int, int] | None = None) -> np.ndarray:
        """Heatmap in [0, 1], float32, of shape ``output_size`` (H, W) or the input size.

        ``image`` is one preprocessed (S, S, 3) array; ``target`` is the class to explain.
        """
        cam = self.raw_cam(image, method, target)
        height, width = output_size or image.shape[:2]
        return _normalise(cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR))


def colour_bar(colormap: str = "jet", width: int = 256, height: int = 14) -> np.ndarray:
    """uint8 RGB strip from 0 (left) to 1 (right) of ``colormap``: the legend of :func:`overlay_heatmap`."""
    from matplotlib import colormaps

    ramp = np.linspace(0.0, 1.0, width)[None, :].repeat(height, axis=0)
    return np.rint(colormaps[colormap](ramp)[:, :, :3] * 255).astype(np.uint8)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", opacity: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heatmap onto an image; returns uint8 RGB of the image's size.

    ``image``: uint8 gray (H, W) or RGB (H, W, 3), or float in [0, 1]. The heatmap
    is resized to the image if needed.
    """
    from matplotlib import colormaps

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.min() < -1e-6 or heatmap.max() > 1 + 1e-6:
        raise ValueError("heatmap must be a 2-D array with values in [0, 1]")
    base = np.asarray(image)
    if base.dtype != np.uint8:
        if base.min() < 0 or base.max() > 1:
            raise ValueError("a float image must have values in [0, 1]")
        base = np.rint(base * 255).astype(np.uint8)
    if base.ndim == 2:
        base = np.repeat(base[:, :, None], 3, axis=2)
    if heatmap.shape != base.shape[:2]:
        heatmap = cv2.resize(heatmap, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = colormaps[colormap](np.clip(heatmap, 0, 1))[:, :, :3] * 255.0
    blended = (1.0 - opacity) * base.astype(np.float32) + opacity * colored
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
