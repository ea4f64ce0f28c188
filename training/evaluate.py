"""Evaluate a model artifact on a folder split: metrics with bootstrap intervals, and plots.

Thresholds come from the artifact (chosen on validation); nothing here is tuned
on the data being evaluated.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.artifact import Thresholds, history_path, read_verified_metadata, save_metadata
from model.predictor import Predictor
from training import data as data_lib
from training import metrics as metrics_lib

log = logging.getLogger(__name__)


def predict_split(predictor: Predictor, examples):
    """(labels, calibrated probabilities, examples kept) for every readable image of ``examples``."""
    images, labels, kept = data_lib.load_images(examples, predictor.metadata.preprocessing)
    return labels, predictor.predict(np.repeat(images, 3, axis=-1)).probabilities, kept


def evaluation_report(labels, probabilities, thresholds: Thresholds) -> dict:
    """Metrics at each of the artifact's thresholds, ranking metrics and 95 % bootstrap intervals."""
    report = {
        "ranking": metrics_lib.ranking_metrics(labels, probabilities),
        "thresholds": {name: metrics_lib.classification_metrics(labels, probabilities, value)
                       for name, value in thresholds.values().items()},
        "default_threshold": thresholds.default,
    }
    report["bootstrap"] = metrics_lib.bootstrap_ci(labels, probabilities, thresholds.default_value)
    report["scores"] = per_class_scores(labels, probabilities)
    return report


def per_class_scores(labels, probabilities) -> dict:
    """Each class's sorted probabilities (no file names): the operating table at ANY threshold, exactly."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    return {name: sorted(round(float(p), 5) for p in probabilities[labels == i]) for i, name in enumerate(("NORMAL", "PNEUMONIA"))}


def evaluate(model: str, data: str, out: str, split: str = "test", plots: bool = True, record: bool = False) -> dict:
    predictor = Predictor.load(model)
    examples = data_lib.list_split(data, split)
    labels, probabilities, examples = predict_split(predictor, examples)
    meta = predictor.metadata
    report = {
        "model": Path(model).name,
        "model_sha256": meta.sha256,
        "model_version": meta.model_version,
        "split": split,
        "evaluated": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": data_lib.fingerprint(examples),
        "model_validation": meta.metrics.validation,
        "model_stress_validation": meta.metrics.stress_validation,
        "model_training": {k: meta.training.get(k) for k in
                           ("weights", "unfreeze_blocks", "mixup_alpha", "label_smoothing", "stage2_lr", "epochs_run", "seed",
                            "schedule", "rotation", "shift", "zoom_height", "zoom_width", "soup_of")},
        **evaluation_report(labels, probabilities, meta.thresholds),
    }
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s: %s", split, json.dumps({"ranking": report["ranking"], "default": report["thresholds"][report["default_threshold"]]}))
    if plots:
        from training import plots as plots_lib

        plots_lib.write_all(out_path.parent, labels, probabilities, predictor, examples, report,
                            history_path(model))
    if record:
        _record(model, split, report)
    return report


def _record(model_path, split, report):
    """Copy headline metrics into the metadata; the .keras file (and so its checksum) is untouched."""
    meta = read_verified_metadata(model_path)
    default = report["default_threshold"]
    recorded = {**report["ranking"], **report["bootstrap"], **report["thresholds"][default], "at_threshold": default,
                "screening": report["thresholds"].get("screening"), "scores": report["scores"]}
    save_metadata(model_path, meta.replace(metrics=meta.metrics.replace(**{split: recorded})))
    log.info("recorded %s metrics for %s", split, model_path)
