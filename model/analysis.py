"""From an uploaded file to everything the app shows, with no Streamlit in sight.

The app caches these results per image, so moving the threshold or the overlay
opacity never runs the network again.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import cv2
import numpy as np

from model.artifact import CLASS_NAMES
from model.explain import CamExplainer
from model.faithfulness import FaithfulnessResult, deletion_check
from model.ood import OodVerdict, image_stats
from model.predictor import Predictor, label_for
from model.preprocessing import decode_upload, preprocess_gray

DISPLAY_MAX_SIDE = 1024


@dataclass(frozen=True)
class ImageAnalysis:
    display: np.ndarray  # uint8 grayscale in the upload's own aspect ratio, at most DISPLAY_MAX_SIDE a side
    model_input: np.ndarray  # float32 (S, S, 3) in [0, 1]: what the network saw
    probability: float  # calibrated P(PNEUMONIA)
    ood: OodVerdict  # is this like the training X-rays? If not, the probability is unreliable

    def label(self, threshold: float) -> str:
        return label_for(self.probability, threshold)


def _display_copy(gray: np.ndarray) -> np.ndarray:
    scale = DISPLAY_MAX_SIDE / max(gray.shape)
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def analyze_bytes(predictor: Predictor, data: bytes) -> ImageAnalysis:
    """Decode, preprocess and predict; raises ImageInputError with a human message on bad input."""
    decoded = decode_upload(data)
    model_input = preprocess_gray(decoded.gray, predictor.preprocess_config)
    probabilities, features = predictor.forward(model_input[None])
    verdict = predictor.ood.check(features[0], image_stats(decoded.gray, decoded.colourfulness))
    return ImageAnalysis(_display_copy(decoded.gray), model_input, float(probabilities[0]), verdict)


RESULT_COLUMNS = ("file", "probability", "label", "threshold", "message")


def results_rows(results: list[tuple[str, ImageAnalysis | None, str | None]], threshold: float) -> list[dict]:
    """Table rows for (name, analysis or None, error or None) triples.

    The probability of an out-of-distribution image is withheld, never silently
    reported. Rows hold only the user's own file name and model outputs: no
    DICOM header field can reach them.
    """
    rows = []
    for name, analysis, error in results:
        usable = analysis is not None and analysis.ood.in_distribution
        message = error or ("" if usable else f"withheld: {analysis.ood.message}")
        rows.append({"file": name, "probability": round(analysis.probability, 4) if usable else None,
                     "label": analysis.label(threshold) if usable else "", "threshold": threshold, "message": message})
    return rows


def rows_to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def target_log_odds_fn(predictor: Predictor, target: str):
    """Batch -> calibrated log-odds of ``target``, for the faithfulness check."""
    sign = 1.0 if target == CLASS_NAMES[1] else -1.0
    return lambda images: sign * predictor.forward_log_odds(images)[0]


def faithfulness(predictor: Predictor, explainer: CamExplainer, model_input: np.ndarray, method: str,
                 target: str) -> tuple[np.ndarray, FaithfulnessResult]:
    """(heatmap at model resolution, deletion check of that heatmap)."""
    heatmap = explainer.explain(model_input, method, target)
    return heatmap, deletion_check(target_log_odds_fn(predictor, target), model_input, heatmap)
