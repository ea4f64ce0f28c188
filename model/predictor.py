"""Load a verified model once and predict fast (a compiled function, not ``model.predict``)."""

from __future__ import annotations

import os

import numpy as np

from model.artifact import CLASS_NAMES, SHIPPED_MODEL, ArtifactError, load_model
from model.backbones import FEATURE_LAYER
from model.ood import OodDetector
from model.preprocessing import PreprocessConfig, preprocess_bytes


def label_for(probability: float, threshold: float) -> str:
    """PNEUMONIA when the probability reaches the threshold."""
    return CLASS_NAMES[1] if probability >= threshold else CLASS_NAMES[0]


def calibrated_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled sigmoid, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def compiled_forward(model, logit_layer: str, input_size: int):
    """A function (N, S, S, 3) float32 -> ((N,) logits, (N, D) pooled features), traced once.

    One pass gives both the decision and the features the out-of-distribution
    gate needs. ``model.predict`` on one image is ~3x slower: it builds a data
    pipeline per call.
    """
    import keras
    import tensorflow as tf

    view = keras.Model(model.inputs, [model.get_layer(logit_layer).output, model.get_layer(FEATURE_LAYER).output])
    run = tf.function(lambda images: view(images, training=False),
                      input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32)])
    run(np.zeros((1, input_size, input_size, 3), np.float32))  # trace once, up front

    def forward(images):
        logits, features = run(np.asarray(images, dtype=np.float32))
        return np.asarray(logits)[:, 0], np.asarray(features)

    return forward


class Predictor:
    """A model plus its metadata; thread-safe for concurrent ``predict_*`` calls."""

    def __init__(self, model, metadata: dict):
        self.model = model
        self.metadata = metadata
        self.preprocess_config = PreprocessConfig.from_dict(metadata["preprocessing"])
        self.temperature = float(metadata["calibration"]["temperature"])
        if "ood" not in metadata:
            raise ArtifactError("this model has no out-of-distribution gate fitted; "
                                "run 'python -m training refit --model PATH --data DIR' first")
        self.ood = OodDetector(metadata["ood"])
        self._forward = compiled_forward(model, metadata["logit_layer"], int(metadata["input_size"]))

    @classmethod
    def load(cls, model_path: str | os.PathLike | None = None) -> Predictor:
        model, meta = load_model(model_path or SHIPPED_MODEL)
        return cls(model, meta)

    @property
    def default_threshold(self) -> float:
        thresholds = self.metadata["thresholds"]
        return float(thresholds[thresholds["default"]]["value"])

    def forward_log_odds(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated PNEUMONIA log-odds, logit / T; pooled features) for a preprocessed batch (N, S, S, 3)."""
        images = np.asarray(images, dtype=np.float32)
        if len(images) == 0:
            return np.zeros(0), np.zeros((0, 0), np.float32)
        chunks = [self._forward(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        logits = np.concatenate([c[0] for c in chunks]).astype(np.float64)
        return logits / self.temperature, np.concatenate([c[1] for c in chunks])

    def forward(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated PNEUMONIA probabilities, pooled features) for a preprocessed batch (N, S, S, 3)."""
        log_odds, features = self.forward_log_odds(images, batch_size)
        return calibrated_probability(log_odds, 1.0), features

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated PNEUMONIA probabilities for a preprocessed batch."""
        return self.forward(images, batch_size)[0]

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess_bytes(data, self.preprocess_config)
