"""Load a verified model once and predict fast.

A :class:`Predictor` wraps a forward pass (:mod:`model.runtime`): the LiteRT
export when loaded from disk, as the app and CLI do, or the in-process Keras
model during training. It never imports TensorFlow itself.
"""

from __future__ import annotations

import os

import numpy as np

from model.artifact import CLASS_NAMES, SHIPPED_MODEL, ArtifactError, read_verified_metadata, verified_litert_path
from model.ood import OodDetector
from model.preprocessing import PreprocessConfig, preprocess_bytes
from model.runtime import ForwardPass, LiteRtForward


def label_for(probability: float, threshold: float) -> str:
    """PNEUMONIA when the probability reaches the threshold."""
    return CLASS_NAMES[1] if probability >= threshold else CLASS_NAMES[0]


def calibrated_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled sigmoid, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


class Predictor:
    """A forward pass plus its model's metadata; thread-safe for concurrent calls."""

    def __init__(self, forward, metadata: dict):
        self.run = forward  # images -> ForwardPass; also what the explainer uses
        self.metadata = metadata
        self.preprocess_config = PreprocessConfig.from_dict(metadata["preprocessing"])
        self.temperature = float(metadata["calibration"]["temperature"])
        if "ood" not in metadata:
            raise ArtifactError("this model has no out-of-distribution gate fitted; "
                                "run 'python -m training refit --model PATH --data DIR' first")
        self.ood = OodDetector(metadata["ood"])

    @classmethod
    def load(cls, model_path: str | os.PathLike | None = None) -> Predictor:
        """The verified LiteRT export of ``model_path`` (default: the shipped model)."""
        model_path = model_path or SHIPPED_MODEL
        meta = read_verified_metadata(model_path)
        return cls(LiteRtForward(verified_litert_path(model_path, meta)), meta)

    @property
    def default_threshold(self) -> float:
        thresholds = self.metadata["thresholds"]
        return float(thresholds[thresholds["default"]]["value"])

    def forward_log_odds(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated PNEUMONIA log-odds, logit / T; pooled features) for a preprocessed batch (N, S, S, 3)."""
        images = np.asarray(images, dtype=np.float32)
        if len(images) == 0:
            return np.zeros(0), np.zeros((0, 0), np.float32)
        passes: list[ForwardPass] = [self.run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        logits = np.concatenate([p.logits for p in passes]).astype(np.float64)
        return logits / self.temperature, np.concatenate([p.features for p in passes])

    def forward(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated PNEUMONIA probabilities, pooled features) for a preprocessed batch (N, S, S, 3)."""
        log_odds, features = self.forward_log_odds(images, batch_size)
        return calibrated_probability(log_odds, 1.0), features

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated PNEUMONIA probabilities for a preprocessed batch."""
        return self.forward(images, batch_size)[0]

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess_bytes(data, self.preprocess_config)
