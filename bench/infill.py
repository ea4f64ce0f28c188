"""Is the faithfulness check's in-fill neutral? ``python -m bench infill [--data DIR] [--n 60]``.

Removing random 15 % of an image should, on average, leave the evidence for
pneumonia where it was: if it moves it, the in-fill itself is evidence, and the
check compares the heatmap against a biased yardstick. For each in-fill in
``model.faithfulness.INFILLS`` this prints the mean and spread of the change in
pneumonia log-odds (after minus before; positive means toward pneumonia) over
random removals, on the committed samples and on ``--n`` images of ``--data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def random_removal_shift(predictor, images, infill: str, n_random: int = 8) -> np.ndarray:
    """Per image: mean change in PNEUMONIA log-odds when random cells are removed with ``infill``."""
    from model.faithfulness import deletion_check

    score = lambda batch: predictor.predict(batch).log_odds  # noqa: E731
    flat = np.zeros(images.shape[1:3], np.float32)  # the map is irrelevant: only the random removals are read
    checks = [deletion_check(score, image, flat, n_random=n_random, infill=infill) for image in images]
    return np.array([c.random_removed - c.original for c in checks])


def load(paths, predictor) -> np.ndarray:
    from model.preprocessing import prepare

    return np.stack([prepare(p.read_bytes(), predictor.metadata.preprocessing).model_input for p in paths])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench infill", description=__doc__)
    parser.add_argument("--data", help="a folder of X-rays, e.g. ../shared/data/chest_xray/test")
    parser.add_argument("--n", type=int, default=60, help="images drawn (seeded) from --data")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from model.faithfulness import INFILLS
    from model.predictor import Predictor

    predictor = Predictor.load()
    sets = {"samples": sorted((ROOT / "app" / "samples").glob("*.jpeg"))}
    if args.data:
        paths = sorted(p for p in Path(args.data).rglob("*.jpeg"))
        sets[f"{args.n} images of {args.data}"] = [paths[i] for i in np.random.default_rng(0).choice(len(paths), args.n, replace=False)]
    results = {}
    for name, paths in sets.items():
        images = load(paths, predictor)
        for infill in INFILLS:
            shift = random_removal_shift(predictor, images, infill)
            results[f"{name} | {infill}"] = {"mean": round(float(shift.mean()), 3), "sd": round(float(shift.std()), 3),
                                             "mean_abs": round(float(np.abs(shift).mean()), 3), "n": len(shift)}
            print(f"{name:40} {infill:6} mean {shift.mean():+.3f}  sd {shift.std():.3f}  mean |.| {np.abs(shift).mean():.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0
