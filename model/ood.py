"""Out-of-distribution gate: does this input look like the frontal pediatric chest X-rays we trained on?

Two layers, cheapest first:

1. Image checks on the decoded pixels: colour photographs (radiographs are
   grey) and blank or near-uniform images.
2. A probabilistic-PCA Mahalanobis distance on the network's pooled features,
   fitted on the training split; its threshold is the largest distance of any
   validation-split X-ray (or a chosen quantile of those distances).

The fitted parameters live in the model's metadata (``ood`` section), encoded
as base64 float32 so the one JSON stays compact.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

MAX_COLORFULNESS = 0.06  # mean (max - min) channel spread, 0..1; grey X-rays saved as RGB are ~0
MIN_GRAY_STD = 6.0  # uint8 grey levels: below this the image is blank or near-uniform
PCA_COMPONENTS = 32
FIT_QUANTILE = 1.0  # the farthest validation X-ray: the test split is shifted, a tighter quantile over-rejects it

NEAR_LIMIT = 0.8  # feature distance ratio above which an accepted image is called close to the gate's limit
HEADLINE = "Unlike the X-rays the model was trained on"


@dataclass(frozen=True)
class ImageStats:
    colorfulness: float  # 0 for grey images
    gray_std: float


@dataclass(frozen=True)
class OodVerdict:
    in_distribution: bool
    reasons: tuple[str, ...]  # "colour", "blank", "features": the checks that fired
    distance: float  # feature distance / threshold: > 1 is out of distribution
    stats: ImageStats

    @property
    def near_limit(self) -> bool:
        """Accepted, but closer to the gate's limit than most training X-rays: a caution, not a refusal."""
        return self.in_distribution and self.distance > NEAR_LIMIT

    @property
    def message(self) -> str:
        """Which checks fired and by how far, in words; empty when none did."""
        details = {
            "colour": f"it is in colour (colour spread {self.stats.colorfulness:.2f}; grey radiographs are near 0)",
            "blank": f"it is blank or nearly uniform (grey-level spread {self.stats.gray_std:.1f})",
            "features": (f"its features are {self.distance:.1f}× as far from the training X-rays as the farthest "
                         "validation X-ray (another view, body part, age group, machine or a non-X-ray)"),
        }
        return "; ".join(details[r] for r in self.reasons)

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "reasons": list(self.reasons),
                "distance_ratio": round(self.distance, 4), "near_limit": self.near_limit, "message": self.message}


def image_stats(gray: np.ndarray, colorfulness: float) -> ImageStats:
    return ImageStats(float(colorfulness), float(np.std(gray)))


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float64)


def fit_ood(train_features: np.ndarray, val_features: np.ndarray, components: int = PCA_COMPONENTS,
            quantile: float = FIT_QUANTILE) -> dict:
    """Fit the PPCA distance on training features; set the threshold at a validation quantile."""
    train_features = np.asarray(train_features, np.float64)
    dim = train_features.shape[1]
    k = int(min(components, dim - 1, len(train_features) - 1))
    mean = train_features.mean(axis=0)
    _, singular, vt = np.linalg.svd(train_features - mean, full_matrices=False)
    variances = singular[:k] ** 2 / (len(train_features) - 1)
    residual_variance = max(float((singular[k:] ** 2).sum() / (len(train_features) - 1) / max(dim - k, 1)), 1e-8)
    section = {"method": f"probabilistic PCA Mahalanobis distance on pooled features, {k} components",
               "dim": dim, "components": k, "mean": _encode(mean), "basis": _encode(vt[:k]),
               "variances": _encode(variances), "residual_variance": residual_variance, "threshold": 1.0,
               "max_colorfulness": MAX_COLORFULNESS, "min_gray_std": MIN_GRAY_STD}
    distances = OodDetector(section).distances(val_features)
    section["threshold"] = float(np.quantile(distances, quantile))
    section["threshold_rule"] = ("largest validation-split distance" if quantile >= 1.0
                                 else f"{quantile:.3f} quantile of validation-split distances")
    return section


class OodDetector:
    def __init__(self, section: dict):
        dim, k = int(section["dim"]), int(section["components"])
        self.mean = _decode(section["mean"], (dim,))
        self.basis = _decode(section["basis"], (k, dim))
        self.variances = _decode(section["variances"], (k,))
        self.residual_variance = float(section["residual_variance"])
        self.threshold = float(section["threshold"])
        self.max_colorfulness = float(section.get("max_colorfulness", MAX_COLORFULNESS))
        self.min_gray_std = float(section.get("min_gray_std", MIN_GRAY_STD))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared PPCA Mahalanobis distance, divided by the feature dimension."""
        centred = np.asarray(features, np.float64) - self.mean
        projected = centred @ self.basis.T
        residual = (centred ** 2).sum(axis=1) - (projected ** 2).sum(axis=1)
        return ((projected ** 2 / self.variances).sum(axis=1) + np.maximum(residual, 0) / self.residual_variance) / len(self.mean)

    def check(self, features: np.ndarray, stats: ImageStats) -> OodVerdict:
        """Verdict for ONE image: its pooled features (D,) and decoded-pixel statistics."""
        reasons = []
        if stats.colorfulness > self.max_colorfulness:
            reasons.append("colour")
        if stats.gray_std < self.min_gray_std:
            reasons.append("blank")
        ratio = float(self.distances(np.asarray(features)[None])[0] / self.threshold)
        if ratio > 1.0:
            reasons.append("features")
        return OodVerdict(not reasons, tuple(reasons), ratio, stats)
