"""Calibration, threshold choice and metrics. Pure numpy/scikit-learn: no Keras here.

Everything that chooses (temperature, thresholds) is meant to be fitted on the
validation split only; :func:`classification_metrics` is what gets reported.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn import metrics as skm

from model.predictor import calibrated_probability, logit, sigmoid

TEMPERATURE_RANGE = (0.05, 20.0)
THRESHOLD_DECIMALS = 3  # stored thresholds are exactly what the app's slider can show and the CLI uses
SCREENING_SENSITIVITY = 0.99  # screening should miss as few as possible
CONFIRMATORY_SPECIFICITY = 0.97  # confirmatory should raise as few false alarms as possible


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the validation negative log-likelihood of sigmoid(logit / T)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)

    def nll(log_t):
        p = np.clip(calibrated_probability(logits, np.exp(log_t)), 1e-12, 1 - 1e-12)
        return -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))

    result = minimize_scalar(nll, bounds=tuple(np.log(TEMPERATURE_RANGE)), method="bounded")
    return float(np.exp(result.x))


def _sens_spec(labels, probabilities, threshold):
    predicted = probabilities >= threshold
    positives, negatives = labels == 1, labels == 0
    return float(predicted[positives].mean()), float((~predicted[negatives]).mean())


def balanced_threshold(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Youden's J maximum; when J is flat over an interval (a near-separable validation
    set), take the interval's midpoint in logit space instead of its edge (max margin)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    candidates = np.unique(np.concatenate([probabilities, [1.0]]))
    j = np.array([sum(_sens_spec(labels, probabilities, t)) - 1 for t in candidates])
    best = np.isclose(j, j.max())
    first = int(np.argmax(best))
    last = first
    while last + 1 < len(best) and best[last + 1]:
        last += 1
    # thresholds in (candidates[first - 1], candidates[last]] all give the maximal J
    low = candidates[first - 1] if first > 0 else candidates[0] / 2
    high = candidates[last]
    step = 10**-THRESHOLD_DECIMALS
    value = float(np.clip(round(float(sigmoid((logit(low) + logit(high)) / 2)), THRESHOLD_DECIMALS), step, 1 - step))
    sensitivity, specificity = _sens_spec(labels, probabilities, value)
    return {"value": value, "rule": "Youden J maximum on the shift-stress validation, midpoint (logit space) of the maximal plateau",
            "sensitivity": sensitivity, "specificity": specificity}


def sensitivity_threshold(labels: np.ndarray, probabilities: np.ndarray, min_sensitivity: float) -> dict:
    """Highest threshold whose validation sensitivity is at least ``min_sensitivity``."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    positives = np.sort(probabilities[labels == 1])
    allowed_misses = int(np.floor((1 - min_sensitivity) * len(positives)))
    value = float(positives[allowed_misses])  # thresholds at or below this keep the sensitivity
    step = 10**-THRESHOLD_DECIMALS
    value = float(np.clip(round(np.floor(value / step + 1e-9) * step, THRESHOLD_DECIMALS), step, 1 - step))  # down: keeps sensitivity
    sensitivity, specificity = _sens_spec(labels, probabilities, value)
    return {"value": value, "rule": f"highest threshold with shift-stress validation sensitivity >= {min_sensitivity}",
            "sensitivity": sensitivity, "specificity": specificity}


def specificity_threshold(labels: np.ndarray, probabilities: np.ndarray, min_specificity: float) -> dict:
    """Lowest threshold whose validation specificity is at least ``min_specificity``."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    negatives = np.sort(probabilities[labels == 0])[::-1]
    allowed_alarms = int(np.floor((1 - min_specificity) * len(negatives)))
    value = float(negatives[allowed_alarms])  # thresholds above this keep the specificity
    step = 10**-THRESHOLD_DECIMALS
    value = float(np.clip(round((np.floor(value / step + 1e-9) + 1) * step, THRESHOLD_DECIMALS), step, 1 - step))  # up: keeps specificity
    sensitivity, specificity = _sens_spec(labels, probabilities, value)
    return {"value": value, "rule": f"lowest threshold with shift-stress validation specificity >= {min_specificity}",
            "sensitivity": sensitivity, "specificity": specificity}


def ordered_presets(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The three presets, named by what they do, in threshold order (since v3): screening (stress sensitivity
    >= 0.99) <= balanced (Youden's J, the default) <= confirmatory (stress specificity >= 0.97). A rule whose
    threshold would break the order is clamped to the balanced threshold, and its rule says so."""
    balanced = balanced_threshold(labels, probabilities)
    screening = sensitivity_threshold(labels, probabilities, SCREENING_SENSITIVITY)
    confirmatory = specificity_threshold(labels, probabilities, CONFIRMATORY_SPECIFICITY)
    for preset, out_of_order in ((screening, screening["value"] > balanced["value"]),
                                 (confirmatory, confirmatory["value"] < balanced["value"])):
        if out_of_order:
            sensitivity, specificity = _sens_spec(labels, probabilities, balanced["value"])
            preset.update(value=balanced["value"], sensitivity=sensitivity, specificity=specificity,
                          rule=preset["rule"] + " (clamped to the balanced threshold to keep the order)")
    return {"default": "balanced", "screening": screening, "balanced": balanced, "confirmatory": confirmatory}


def operating_points(labels: np.ndarray, probabilities: np.ndarray, step: float = 0.01) -> list[dict]:
    """Validation sensitivity/specificity at thresholds step, 2·step, …, 1 − step (for the app readout)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    points = []
    for t in np.round(np.arange(step, 1.0, step), 4):
        sensitivity, specificity = _sens_spec(labels, probabilities, t)
        points.append({"threshold": float(t), "sensitivity": round(sensitivity, 4), "specificity": round(specificity, 4)})
    return points


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width bins of the predicted PNEUMONIA probability."""
    labels, probabilities = np.asarray(labels, np.float64), np.asarray(probabilities, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(probabilities[mask].mean() - labels[mask].mean())
    return float(error)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "threshold": float(threshold),
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "sensitivity": float(skm.recall_score(labels, predicted, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(skm.log_loss(labels, np.clip(np.asarray(probabilities, np.float64), 1e-12, 1 - 1e-12), labels=[0, 1]))


def ranking_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    return {
        "roc_auc": float(skm.roc_auc_score(labels, probabilities)),
        "log_loss": log_loss(labels, probabilities),
        "pr_auc": float(skm.average_precision_score(labels, probabilities)),
        "brier": float(skm.brier_score_loss(labels, probabilities)),
        "ece": expected_calibration_error(labels, probabilities),
    }


def bootstrap_ci(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                 n_resamples: int = 1000, seed: int = 0) -> dict:
    """Percentile 95 % intervals for ROC AUC and accuracy over bootstrap resamples of images."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    rng = np.random.default_rng(seed)
    aucs, accuracies = [], []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() == labels[idx].max():
            continue
        aucs.append(skm.roc_auc_score(labels[idx], probabilities[idx]))
        accuracies.append(np.mean((probabilities[idx] >= threshold) == labels[idx]))
    return {"roc_auc_95ci": [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))],
            "accuracy_95ci": [float(np.percentile(accuracies, 2.5)), float(np.percentile(accuracies, 97.5))],
            "n_resamples": len(aucs)}
