"""Would a shift-like validation split rank variants better than a random patient split? A quick probe.

Our patient-level validation split is nearly separable, so it can hardly tell
variants apart. A split that mimics a later acquisition period might be harder:
within each acquisition batch the file names reveal (``IM-``, ``NORMAL2-IM-``,
``person``), hold out the highest-numbered patients. The probe fits a logistic
regression on frozen ImageNet features for each split and reports validation
ROC AUC: if the temporal split is no harder, it cannot rank variants either.
Only ``train/`` is read.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from model.backbones import build_classifier, network_layout
from model.forward_pass import keras_forward
from model.preprocessing import PreprocessConfig
from training import data as data_lib
from training.train import forward_all

log = logging.getLogger(__name__)


def acquisition_batch(patient: str) -> str:
    """The batch a patient id belongs to: its prefix without the number."""
    return re.sub(r"\d+$", "", patient)


def temporal_split(examples, val_fraction: float = 0.15):
    """(train, validation): the highest-numbered ``val_fraction`` of patients of every batch and class go to validation."""
    held_out = set()
    for label in (0, 1):
        batches: dict[str, set[str]] = {}
        for e in examples:
            if e.label == label:
                batches.setdefault(acquisition_batch(e.patient), set()).add(e.patient)
        for patients in batches.values():
            ranked = sorted(patients, key=lambda p: int(re.search(r"(\d+)$", p).group(1)))
            held_out |= set(ranked[len(ranked) - round(val_fraction * len(ranked)):])
    return [e for e in examples if e.patient not in held_out], [e for e in examples if e.patient in held_out]


def _probe_auc(features, labels, train_mask) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    clf.fit(features[train_mask], labels[train_mask])
    return float(roc_auc_score(labels[~train_mask], clf.predict_proba(features[~train_mask])[:, 1]))


def split_probe(data: str, out: str, seed: int = 42, val_fraction: float = 0.15) -> dict:
    preprocess = PreprocessConfig()
    examples = data_lib.list_split(data, "train")
    images, labels, examples = data_lib.load_images(examples, preprocess)
    network = network_layout("efficientnet_lite0", preprocess.input_size)
    model = build_classifier("efficientnet_lite0", "imagenet", preprocess.input_size)
    _, features = forward_all(keras_forward(model, network), images)
    splits = {f"random patient split, seed {s}": data_lib.patient_split(examples, val_fraction, s)
              for s in (seed, seed + 1, seed + 2)}
    splits["temporal: highest patient numbers of each batch"] = temporal_split(examples, val_fraction)
    rows = []
    for name, (_, validation) in splits.items():
        held_out = {e.path for e in validation}
        train_mask = np.array([e.path not in held_out for e in examples])
        rows.append({"split": name, "validation_images": int((~train_mask).sum()),
                     "validation_roc_auc": _probe_auc(features, labels, train_mask)})
        log.info("%s: validation ROC AUC %.4f", name, rows[-1]["validation_roc_auc"])
    report = {"probe": "logistic regression on frozen ImageNet EfficientNet-Lite0 pooled features", "rows": rows}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report
