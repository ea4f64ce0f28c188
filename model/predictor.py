"""Load a verified model once; one way in: :meth:`Predictor.predict`.

A :class:`Predictor` wraps a forward pass (:mod:`model.forward_pass`): the
LiteRT export when loaded from disk, as the app and CLI do, or the in-process
Keras model during training. It never imports TensorFlow itself. Its result
holds everything one pass computes (calibrated log-odds, pooled features, and
the Grad-CAM layer's activations and gradients), so an explanation is built
from the same pass as the prediction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from model.artifact import CLASS_NAMES, SHIPPED_MODEL, ArtifactError, ModelMetadata, read_verified_metadata, verified_litert_path
from model.forward_pass import ForwardPass, LiteRtForward, run_in_batches
from model.ood import OodDetector


def label_for(probability: float, threshold: float) -> str:
    """PNEUMONIA when the probability reaches the threshold."""
    return CLASS_NAMES[1] if probability >= threshold else CLASS_NAMES[0]


def target_sign(target: str) -> float:
    """+1 for PNEUMONIA, -1 for NORMAL: the one logit read for either class (log-odds of NORMAL = -log-odds)."""
    if target not in CLASS_NAMES:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(CLASS_NAMES)}")
    return 1.0 if target == CLASS_NAMES[1] else -1.0


def sigmoid(log_odds) -> np.ndarray:
    """Probability from log-odds, computed stably in float64."""
    z = np.asarray(log_odds, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def logit(probability) -> np.ndarray:
    """Log-odds of a probability (the inverse of :func:`sigmoid`), clipped away from 0 and 1."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def calibrated_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled sigmoid."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


@dataclass(frozen=True)
class Predictions:
    """One pass over a batch of N preprocessed images."""

    raw: ForwardPass  # the network's own outputs: logits, pooled features, CAM activations and gradients
    temperature: float

    @property
    def log_odds(self) -> np.ndarray:
        """(N,) calibrated PNEUMONIA log-odds."""
        return self.raw.logits.astype(np.float64) / self.temperature

    @property
    def probabilities(self) -> np.ndarray:
        """(N,) calibrated P(PNEUMONIA)."""
        return sigmoid(self.log_odds)

    @property
    def features(self) -> np.ndarray:
        return self.raw.features

    def image(self, index: int) -> ForwardPass:
        """The pass of one image, batch axis kept: what an explanation is built from."""
        return ForwardPass(*(getattr(self.raw, f)[index:index + 1] for f in ForwardPass.__dataclass_fields__))


class Predictor:
    """A forward pass plus its model's metadata; thread-safe for concurrent calls."""

    def __init__(self, forward, metadata: ModelMetadata):
        self.forward = forward  # images -> ForwardPass
        self.metadata = metadata
        if metadata.ood is None:
            raise ArtifactError("this model has no out-of-distribution gate fitted; "
                                "run 'python -m training refit --model PATH --data DIR' first")
        self.ood = OodDetector(metadata.ood)

    @classmethod
    def load(cls, model_path: str | os.PathLike | None = None, lanes: int = 1) -> Predictor:
        """The verified LiteRT export of ``model_path`` (default: the shipped model); ``lanes`` 2 for a process that
        explains what it predicts (see :class:`~model.forward_pass.LiteRtForward`)."""
        model_path = model_path or SHIPPED_MODEL
        meta = read_verified_metadata(model_path)
        return cls(LiteRtForward(verified_litert_path(model_path, meta), lanes=lanes), meta)

    def predict(self, images: np.ndarray, batch_size: int = 32) -> Predictions:
        """One pass over preprocessed images (N, S, S, 3) float32 in [0, 1]."""
        return Predictions(run_in_batches(self.forward, np.asarray(images, np.float32), batch_size),
                           self.metadata.calibration.temperature)
