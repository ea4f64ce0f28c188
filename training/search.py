"""Small hyper-parameter search scored on the validation split only.

Each trial is a full, shorter run of :func:`training.train.train` in its own
folder; trials are ranked by the validation Brier score of the calibrated model
(then ROC AUC), never by anything computed on the test split.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path

from model.artifact import read_verified_metadata
from training.train import TrainConfig, train

log = logging.getLogger(__name__)

DEFAULT_GRID = {
    "unfreeze_blocks": ["4", "8", "all"],
    "stage2_lr": [1e-4, 3e-4],
    "dropout": [0.2, 0.4],
}


def search(base: TrainConfig, grid: dict | None = None, max_trials: int = 0) -> list[dict]:
    """Run every combination of ``grid`` (at most ``max_trials`` if > 0); return trials best first."""
    import keras

    if keras.backend.backend() != "tensorflow":  # off TensorFlow, train stops after the fit: nothing to rank
        raise RuntimeError("search needs TensorFlow as the Keras backend (it ranks finished artifacts)")
    grid = grid or DEFAULT_GRID
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    if max_trials > 0:
        combos = combos[:max_trials]
    results = []
    for i, values in enumerate(combos):
        params = dict(zip(names, values))
        config = dataclasses.replace(base, out=str(Path(base.out) / f"trial_{i:02d}"), **params)
        log.info("trial %d/%d: %s", i + 1, len(combos), params)
        meta = read_verified_metadata(train(config))
        validation = meta.metrics.validation
        results.append({"trial": i, **params, "val_brier": validation["brier"], "val_roc_auc": validation["roc_auc"],
                        "val_accuracy": validation["accuracy"], "model": str(Path(config.out))})
    results.sort(key=lambda r: (r["val_brier"], -r["val_roc_auc"]))
    (Path(base.out) / "search.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
