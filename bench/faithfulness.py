"""How often does each heatmap pass its own check, and does the check prove anything?

``python -m bench faithfulness --data DIR [--n 60] [--sanity-n 15] [--model M]... [--out F]``

For ``--n`` X-rays of each class drawn (seeded) from ``DIR/NORMAL`` and ``DIR/PNEUMONIA`` (the official test split,
to report), the app's path: analyse the upload, label it at the model's default threshold, build each method's map
of the evidence for that label from the same pass, and run the deletion check the app shows. Beside them:

- **controls** (:func:`model.faithfulness.control_maps`): the image's edges, fixed central lung fields, the inverse
  of the map shown first and random noise, through the same check; the map shown first must beat each by 25
  points of "supports" on each class (the rule in ``training/card_notes.md``);
- **corner reliance**: the evidence change when the four 32-px corners (where text markers sit, 8 % of the image)
  are in-filled, against the same area at random;
- **sanity** (:mod:`model.sanity`, needs TensorFlow): each method's rank correlation with itself after the head,
  then the top block, then the block below are re-initialised, on ``--sanity-n`` X-rays of each class;
- **time**: the median wait for map + check on this machine, the app's path, over the first 5 X-rays of each class
  (each method alone; the others share occlusion's patch passes between its grids, which changes no map).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("NORMAL", "PNEUMONIA")
CORNER = 32
TIMED_PER_CLASS = 5


def _corner_map(size: int) -> np.ndarray:
    corners = np.zeros((size, size), np.float32)
    for rows in (slice(0, CORNER), slice(size - CORNER, size)):
        for cols in (slice(0, CORNER), slice(size - CORNER, size)):
            corners[rows, cols] = 1.0
    return corners


def measure(model: str | None, paths_by_class: dict[str, list[Path]], methods: list[str], sanity_n: int) -> dict:
    from model.artifact import load_model
    from model.explain import CamExplainer
    from model.faithfulness import CELL, CONTROL_GAP, control_verdicts, deletion_check
    from model.predictor import Predictor
    from model.sanity import CASCADE, sanity
    from model.service import analyze_bytes, explain_with_check, shown_first, target_log_odds_fn

    predictor = Predictor.load(model, lanes=2)  # as the app serves it: its timings are the app's
    explainer = CamExplainer.for_predictor(predictor)
    threshold = predictor.metadata.thresholds.default_value
    first = shown_first(predictor.metadata)
    methods = [first, *(m for m in methods if m != first)]
    verdicts = {m: {c: Counter() for c in CLASSES} for m in methods}
    controls, seconds = {}, {m: [] for m in methods}
    corner_beyond, corner_supports = {c: [] for c in CLASSES}, Counter()
    for_sanity = {c: [] for c in CLASSES}
    for truth, paths in paths_by_class.items():
        for path in paths:
            analysis = analyze_bytes(predictor, path.read_bytes())
            label = analysis.prediction.label(threshold)
            score = target_log_odds_fn(predictor, label)
            image = analysis.model_input
            timed = len(for_sanity[truth]) < TIMED_PER_CLASS  # the first few run alone: the wait a visitor has
            memo = None if timed else {}  # the rest share occlusion's patch passes between its grids
            for method in methods:
                start = time.perf_counter()
                evidence, check = explain_with_check(predictor, explainer, analysis, method, label, memo)
                if timed:
                    seconds[method].append(time.perf_counter() - start)
                verdicts[method][truth][check.verdict] += 1
                if method == first:
                    for name, verdict in control_verdicts(score, image, evidence.heatmap(per_image=True)).items():
                        controls.setdefault(name, {c: Counter() for c in CLASSES})[truth][verdict] += 1
            size = image.shape[0]
            corners = deletion_check(score, image, _corner_map(size), fraction=4 * (CORNER // CELL) ** 2 / (size // CELL) ** 2)
            corner_beyond[truth].append(corners.beyond_random)
            corner_supports[truth] += corners.verdict == "supports"
            if len(for_sanity[truth]) < max(sanity_n, TIMED_PER_CLASS):
                for_sanity[truth].append((image, label))

    def share(counter):
        return counter["supports"] / max(1, sum(counter.values()))

    result = {
        "shown_first": first,
        "verdicts": {m: {c: dict(v) for c, v in per.items()} for m, per in verdicts.items()},
        "supports": {m: {c: share(v) for c, v in per.items()} for m, per in verdicts.items()},
        "controls": {name: {c: share(v) for c, v in per.items()} for name, per in controls.items()},
        "seconds_median": {m: float(np.median(s)) for m, s in seconds.items()},
        "corners": {c: {"beyond_random_mean": float(np.mean(v)), "supports": corner_supports[c], "n": len(v)}
                    for c, v in corner_beyond.items()},
    }
    result["control_gap_min"] = {c: min(result["supports"][first][c] - v[c] for v in result["controls"].values())
                                 for c in CLASSES}
    result["check_discriminates"] = all(g >= CONTROL_GAP for g in result["control_gap_min"].values())
    if sanity_n:
        keras_model, meta = load_model(model) if model else load_model()
        pairs = for_sanity["NORMAL"][:sanity_n] + for_sanity["PNEUMONIA"][:sanity_n]
        result["sanity"] = sanity(keras_model, meta.network, np.stack([p[0] for p in pairs]), [p[1] for p in pairs],
                                  methods, steps=len(CASCADE))
        result["sanity_images"] = {c: len(v[:sanity_n]) for c, v in for_sanity.items()}
    return result


def _print(key: str, r: dict) -> None:
    print(f"{key}: map shown first {r['shown_first']}")
    print(f"{'map':28} {'NORMAL':>8} {'PNEUMONIA':>10} {'sanity (head / +top / +below)':>32} {'map+check s':>12}")
    for m, per in r["supports"].items():
        sanity = " / ".join(f"{v:.2f}" for v in r.get("sanity", {}).get(m, {}).values()) or "-"
        print(f"{m:28} {per['NORMAL']:8.0%} {per['PNEUMONIA']:10.0%} {sanity:>32} {r['seconds_median'][m]:12.3f}")
    for name, per in r["controls"].items():
        print(f"{'control: ' + name:28} {per['NORMAL']:8.0%} {per['PNEUMONIA']:10.0%}")
    print(f"smallest gap to a control: {r['control_gap_min']} -> discriminates: {r['check_discriminates']}")
    print(f"corners: {r['corners']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faithfulness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder with NORMAL/ and PNEUMONIA/, e.g. the test split")
    parser.add_argument("--n", type=int, default=60, help="X-rays drawn (seeded) from each class")
    parser.add_argument("--sanity-n", type=int, default=15, help="X-rays of each class for cascade randomisation (0: skip)")
    parser.add_argument("--method", action="append", help="heatmap methods (repeatable; default: all)")
    parser.add_argument("--model", action="append", help="model .keras path (repeatable; default: the shipped one)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from model.explain import CAM_METHODS

    rng = np.random.default_rng(0)
    paths_by_class = {}
    for name in CLASSES:
        files = sorted((Path(args.data) / name).glob("*.jpeg"))
        paths_by_class[name] = [files[i] for i in sorted(rng.choice(len(files), min(args.n, len(files)), replace=False))]
    results = {}
    for model in args.model or [None]:
        key = model or "shipped"
        results[key] = measure(model, paths_by_class, args.method or list(CAM_METHODS), args.sanity_n)
        _print(key, results[key])
    if args.out:
        Path(args.out).write_text(json.dumps({"n_per_class": args.n, "data": args.data, "models": results}, indent=1) + "\n")
    return 0
