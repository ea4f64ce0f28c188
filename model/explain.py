"""Heatmaps: Grad-CAM, Grad-CAM++, Score-CAM and occlusion as entries of one registry.

Shared work (:class:`CamExplainer`): from the model's forward pass
(:mod:`model.forward_pass`: the target layer's activations, the gradients of the
PNEUMONIA logit with respect to them, and the logit, all from the pass that made
the prediction) to a map in the method's own units, upsampling and scaling. Each
class activation method (:class:`CamMethod`) supplies only its channel weights;
occlusion (:class:`OcclusionMethod`) hides one patch of the image at a time and
maps how far the evidence falls. Each says what it costs in extra passes.
The CAM formulas follow tf-keras-vis (the tests check ours against it); tf-keras-vis
itself rebuilds the model on every call (~0.5 s here), too slow for an app.
Which method a visitor sees first is chosen per model by a written rule
(:mod:`training.explanations`) and stored in its metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from model.artifact import CLASS_NAMES, CamScale
from model.forward_pass import ForwardPass, run_in_batches
from model.pixels import channels_identical
from model.predictor import sigmoid, target_sign

SCORECAM_CHANNELS = 32  # the most active channels used as Score-CAM masks
CAM_SCALE_PERCENTILE = 95.0  # full colour = this percentile of the map peaks over the validation images of a class
LITTLE_EVIDENCE = 0.25  # a map whose strongest spot stays below this share of full scale shows little evidence anywhere
OCCLUSION_PATCH = 32  # pixels per side of the patch occlusion hides
OCCLUSION_FILL_SIGMA = 12.0  # a hidden patch is filled from its surroundings (normalised Gaussian convolution)
OCCLUSION_CHUNK = 16  # occluded images built and scored at a time: bounds memory (16 x 0.6 MB)
DEFAULT_METHOD = "gradcam"  # the map shown first for a model whose metadata names none (written before the rule)


@dataclass(frozen=True)
class CamInputs:
    """What a method sees for one image, already signed for the target class."""

    image: np.ndarray  # (S, S, 3) preprocessed
    activations: np.ndarray  # (h, w, C)
    gradients: np.ndarray  # (h, w, C) d target log-odds / d activations
    logit: float  # target log-odds before temperature
    target_log_odds: Callable[[np.ndarray], np.ndarray]  # images -> target log-odds before temperature
    memo: dict | None = None  # occlusion's fall per patch position, shared by the grids of one image and target

    def target_probability(self, images: np.ndarray) -> np.ndarray:
        return sigmoid(self.target_log_odds(images))


def _gradcam_weights(x: CamInputs) -> np.ndarray:
    return x.gradients.mean(axis=(0, 1))


def _gradcam_plus_plus_weights(x: CamInputs) -> np.ndarray:
    score = np.exp(x.logit)  # Grad-CAM++'s exponential-score trick, as in tf-keras-vis
    first = score * x.gradients
    second = first * x.gradients
    third = second * x.gradients
    global_sum = x.activations.sum(axis=(0, 1), keepdims=True)
    denominator = 2.0 * second + third * global_sum
    alphas = second / np.where(second == 0.0, denominator + 1.0, denominator)
    norm = alphas.sum(axis=(0, 1), keepdims=True)
    alphas = alphas / np.where(norm == 0.0, 1.0, norm)
    return (np.maximum(first, 0.0) * alphas).sum(axis=(0, 1))


def _scorecam_weights(x: CamInputs) -> np.ndarray:
    """Weight each of the most active channels by the target probability of the image masked by it."""
    channels = np.argsort(x.activations.mean(axis=(0, 1)))[::-1][:SCORECAM_CHANNELS]
    size = x.image.shape[0]
    masks = np.stack([_normalise(cv2.resize(x.activations[:, :, c], (size, size), interpolation=cv2.INTER_LINEAR))
                      for c in channels])
    weights = np.zeros(x.activations.shape[-1], np.float32)
    weights[channels] = x.target_probability(x.image[None] * masks[:, :, :, None])
    return weights


@dataclass(frozen=True)
class CamMethod:
    """A class activation map: ReLU of the layer's activations weighted per channel."""

    name: str  # the key used by the CLI, the app and the bench
    label: str  # for people
    weights: Callable[[CamInputs], np.ndarray]  # one weight per channel of the CAM layer
    extra_passes: int  # forward passes beyond the prediction's own

    @property
    def slow(self) -> bool:
        return self.extra_passes > 0

    def raw(self, x: CamInputs) -> np.ndarray:
        """(h, w) at the layer's resolution, >= 0."""
        return np.maximum((x.activations * self.weights(x)).sum(axis=-1), 0.0)


@dataclass(frozen=True)
class OcclusionMethod:
    """Occlusion (Zeiler & Fergus 2014): hide one square patch at a time, filled from its surroundings so no
    edge or flat grey is left for the network to react to, and record how far the target's log-odds fall. A
    pixel's value is the mean fall over the patches that cover it (negative falls count as none).

    ``grids``: (first offset, stride) pairs; each gives patch positions along both axes, and their union is used.
    """

    name: str
    label: str
    grids: tuple[tuple[int, int], ...]
    extra_passes: int  # len(positions(224)): checked by a test

    @property
    def slow(self) -> bool:
        return True

    def positions(self, size: int) -> list[tuple[int, int]]:
        found = set()
        for first, stride in self.grids:
            starts = range(first, size - OCCLUSION_PATCH + 1, stride)
            found.update((r, c) for r in starts for c in starts)
        return sorted(found)

    def raw(self, x: CamInputs) -> np.ndarray:
        """(S, S) mean fall of the target log-odds over the patches covering each pixel, >= 0."""
        image, size = x.image, x.image.shape[0]
        positions = self.positions(size)
        memo = x.memo if x.memo is not None else {}
        missing = [p for p in positions if p not in memo]
        grey = channels_identical(image)
        for start in range(0, len(missing), OCCLUSION_CHUNK):
            chunk = missing[start:start + OCCLUSION_CHUNK]
            falls = x.logit - x.target_log_odds(np.stack([_occluded(image, r, c, grey) for r, c in chunk]))
            memo.update(zip(chunk, falls.tolist()))
        total, count = np.zeros((size, size), np.float64), np.zeros((size, size), np.float64)
        for (r, c), fall in zip(positions, (memo[p] for p in positions)):
            total[r:r + OCCLUSION_PATCH, c:c + OCCLUSION_PATCH] += fall
            count[r:r + OCCLUSION_PATCH, c:c + OCCLUSION_PATCH] += 1
        return np.maximum(total / np.maximum(count, 1), 0.0).astype(np.float32)


def _occluded(image: np.ndarray, row: int, col: int, grey: bool = False) -> np.ndarray:
    """``image`` with the patch at (row, col) replaced by a normalised Gaussian convolution of what surrounds it;
    ``grey``: the channels are identical, so the fill is computed on one and copied to all."""
    size, margin = image.shape[0], int(3 * OCCLUSION_FILL_SIGMA)
    r0, c0 = max(row - margin, 0), max(col - margin, 0)
    r1, c1 = min(row + OCCLUSION_PATCH + margin, size), min(col + OCCLUSION_PATCH + margin, size)
    keep = np.ones((r1 - r0, c1 - c0), np.float32)
    keep[row - r0:row - r0 + OCCLUSION_PATCH, col - c0:col - c0 + OCCLUSION_PATCH] = 0.0
    window = image[r0:r1, c0:c1, :1] if grey else image[r0:r1, c0:c1]
    blurred = cv2.GaussianBlur(window * keep[:, :, None], (0, 0), OCCLUSION_FILL_SIGMA).reshape(window.shape)
    filled = blurred / np.maximum(cv2.GaussianBlur(keep, (0, 0), OCCLUSION_FILL_SIGMA), 1e-3)[:, :, None]
    out = image.copy()
    out[row:row + OCCLUSION_PATCH, col:col + OCCLUSION_PATCH] = filled[row - r0:row - r0 + OCCLUSION_PATCH,
                                                                       col - c0:col - c0 + OCCLUSION_PATCH]
    return out


CAM_METHODS = {m.name: m for m in (
    CamMethod("gradcam", "Grad-CAM", _gradcam_weights, 0),
    CamMethod("gradcam++", "Grad-CAM++", _gradcam_plus_plus_weights, 0),
    CamMethod("scorecam", "Score-CAM", _scorecam_weights, SCORECAM_CHANNELS),
    OcclusionMethod("occlusion", "Occlusion", ((0, 32), (16, 32)), 85),
    OcclusionMethod("occlusion-coarse", "Occlusion (coarse grid)", ((0, 32),), 49),
    OcclusionMethod("occlusion-fine", "Occlusion (fine grid)", ((0, 16),), 169),
)}


def cam_method(name: str) -> CamMethod | OcclusionMethod:
    if name not in CAM_METHODS:
        raise ValueError(f"unknown heatmap method {name!r}; choose one of: {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name]


def _normalise(cam: np.ndarray) -> np.ndarray:
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam, dtype=np.float32)


class CamExplainer:
    """Explains one model's decisions from its forward pass (:mod:`model.forward_pass`), on either engine."""

    def __init__(self, forward):
        self._forward = forward  # images -> ForwardPass (activations and gradients included)

    @classmethod
    def for_predictor(cls, predictor) -> CamExplainer:
        """Shares the predictor's forward pass: one loaded network serves both."""
        return cls(predictor.forward)

    def target_log_odds(self, images: np.ndarray, sign: float = 1.0, chunk: int = 8) -> np.ndarray:
        """Log-odds of the target class (sign +1: PNEUMONIA, -1: NORMAL) for a batch, before temperature.

        Run in chunks: a batch of 32 at 224 px costs ~300 MB of activations at once.
        """
        return sign * run_in_batches(self._forward, np.asarray(images, np.float32), chunk).logits.astype(np.float64)

    def target_probability(self, images: np.ndarray, sign: float = 1.0, chunk: int = 8) -> np.ndarray:
        """Probability of the target class for a batch, before temperature."""
        return sigmoid(self.target_log_odds(images, sign, chunk))

    def raw_cam(self, image: np.ndarray, method: str = "gradcam", target: str = CLASS_NAMES[1],
                computed: ForwardPass | None = None, memo: dict | None = None) -> np.ndarray:
        """The map at the method's own resolution (the layer's, or the image's for occlusion), >= 0, before
        resizing and normalising.

        ``computed``: the pass of this image that made its prediction (batch of one); run now if not given.
        ``memo``: a dict kept by a caller that maps several methods of one image and target (occlusion's grids
        share patch positions, so each position runs once).
        """
        cam, sign = cam_method(method), target_sign(target)
        image = np.asarray(image, np.float32)
        result = computed if computed is not None else self._forward(image[None])
        activations = result.activations[0]
        inputs = CamInputs(image, activations, sign * result.gradients[0], sign * float(result.logits[0]),
                           lambda changed: self.target_log_odds(changed, sign), memo)
        return cam.raw(inputs).astype(np.float32)

    def evidence(self, image: np.ndarray, method: str = "gradcam", target: str = CLASS_NAMES[1],
                 computed: ForwardPass | None = None, reference: float | None = None,
                 output_size: tuple[int, int] | None = None, memo: dict | None = None) -> EvidenceMap:
        """The map upsampled to ``output_size`` (H, W) or the input size, in the method's own units, with the
        full scale (``reference``, from :class:`model.artifact.CamScale`) it is to be shown against."""
        cam = self.raw_cam(image, method, target, computed, memo)
        height, width = output_size or image.shape[:2]
        return EvidenceMap(np.maximum(cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR), 0.0), reference)

    def explain(self, image: np.ndarray, method: str = "gradcam", target: str = CLASS_NAMES[1],
                output_size: tuple[int, int] | None = None, computed: ForwardPass | None = None) -> np.ndarray:
        """Heatmap in [0, 1], float32, of shape ``output_size`` (H, W) or the input size, scaled to its own range.

        ``image`` is one preprocessed (S, S, 3) array; ``target`` is the class to explain.
        """
        return self.evidence(image, method, target, computed, output_size=output_size).heatmap(per_image=True)


@dataclass(frozen=True)
class EvidenceMap:
    """One class activation map and the fixed full scale it is shown against.

    On the absolute scale a map is its raw values over ``reference`` (the model's fitted full scale for this
    method and class), clipped to [0, 1]: weak evidence looks weak, and the colours of two images compare.
    Per image, a map is stretched to its own range: the shape is visible, the strength is not.
    """

    cam: np.ndarray  # (H, W) float32 >= 0, in the method's own units
    reference: float | None  # full scale; None when the model has none fitted (older metadata)

    @property
    def absolute(self) -> bool:
        return self.reference is not None

    @property
    def peak(self) -> float | None:
        """The strongest spot as a share of full scale (may exceed 1); None without a reference."""
        return float(self.cam.max()) / self.reference if self.absolute else None

    @property
    def little_evidence(self) -> bool:
        """On the absolute scale, the strongest spot stays below :data:`LITTLE_EVIDENCE` of full scale."""
        return self.absolute and self.peak < LITTLE_EVIDENCE

    def heatmap(self, per_image: bool = False) -> np.ndarray:
        """float32 in [0, 1]: on the absolute scale, or stretched to the map's own range when ``per_image``
        (or when there is no reference)."""
        if per_image or not self.absolute:
            return _normalise(self.cam).astype(np.float32)
        return np.clip(self.cam / self.reference, 0.0, 1.0).astype(np.float32)


def _one_image(computed: ForwardPass, index: int) -> ForwardPass:
    return ForwardPass(*(getattr(computed, f)[index:index + 1] for f in ForwardPass.__dataclass_fields__))


def fit_cam_scale(forward, images_by_class: dict[str, np.ndarray], percentile: float = CAM_SCALE_PERCENTILE,
                  max_images: int = 256, slow_images: int = 24, batch_size: int = 16, seed: int = 0) -> CamScale:
    """The full scale of every CAM method, for each class: ``percentile`` of the map peaks over that class's images.

    ``forward``: images -> :class:`ForwardPass` (activations and gradients included), either engine.
    ``images_by_class``: class name -> preprocessed validation images (N, S, S, 1 or 3) of that class, explained
    for that class. At most ``max_images`` of each (a fixed random subset), and ``slow_images`` for methods that
    run extra passes (Score-CAM: 32 per image). A method whose peaks are all zero gets no reference.
    """
    explainer = CamExplainer(forward)
    reference, used = {}, {}
    for target, images in images_by_class.items():
        images = np.asarray(images, np.float32)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        chosen = np.random.default_rng(seed).permutation(len(images))[:max_images]
        peaks = {name: [] for name in CAM_METHODS}
        for start in range(0, len(chosen), batch_size):
            batch = images[chosen[start:start + batch_size]]
            computed = forward(batch)
            for i, image in enumerate(batch):
                memo = {}
                for name, method in CAM_METHODS.items():
                    if not method.slow or start + i < slow_images:
                        cam = explainer.evidence(image, name, target, _one_image(computed, i), memo=memo).cam
                        peaks[name].append(float(cam.max()))
        values = {name: float(np.percentile(p, percentile)) for name, p in peaks.items() if p}
        reference[target] = {name: value for name, value in values.items() if value > 0}
        used[target] = {name: len(peaks[name]) for name in reference[target]}
    return CamScale(reference, float(percentile), used)


def color_bar(colormap: str = "jet", width: int = 256, height: int = 14) -> np.ndarray:
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
