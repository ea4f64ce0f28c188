"""How often does the heatmap pass its own check? ``python -m bench faithfulness --data DIR [--n 30] [--model M]...``

For ``--n`` X-rays of each class drawn (seeded) from ``DIR/NORMAL`` and ``DIR/PNEUMONIA``, the app's path: analyse
the upload, label it at the model's default threshold, build the Grad-CAM map of the evidence for that label from
the same pass, and run the deletion check the app shows ("supports", "weak", "does not support"). A model whose
maps fail more often puts the "read with caution" note on more results. Several ``--model`` files are measured on
the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("NORMAL", "PNEUMONIA")


def verdicts(model: str | None, paths_by_class: dict[str, list[Path]]) -> dict[str, dict[str, int]]:
    """Per true class: how many Grad-CAM maps of the model's own call got each verdict."""
    from model.explain import CamExplainer
    from model.predictor import Predictor
    from model.service import TRUST_MAP_METHOD, analyze_bytes, explain_with_check

    predictor = Predictor.load(model)
    explainer = CamExplainer.for_predictor(predictor)
    threshold = predictor.metadata.thresholds.default_value
    counts = {}
    for name, paths in paths_by_class.items():
        tally = Counter()
        for path in paths:
            analysis = analyze_bytes(predictor, path.read_bytes())
            label = analysis.prediction.label(threshold)
            tally[explain_with_check(predictor, explainer, analysis, TRUST_MAP_METHOD, label)[1].verdict] += 1
        counts[name] = dict(sorted(tally.items()))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faithfulness", description=__doc__)
    parser.add_argument("--data", required=True, help="a folder with NORMAL/ and PNEUMONIA/, e.g. the test split")
    parser.add_argument("--n", type=int, default=30, help="X-rays drawn (seeded) from each class")
    parser.add_argument("--model", action="append", help="model .keras path (repeatable; default: the shipped one)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rng = np.random.default_rng(0)
    paths_by_class = {}
    for name in CLASSES:
        files = sorted((Path(args.data) / name).glob("*.jpeg"))
        paths_by_class[name] = [files[i] for i in sorted(rng.choice(len(files), min(args.n, len(files)), replace=False))]
    results = {}
    for model in args.model or [None]:
        key = model or "shipped"
        results[key] = verdicts(model, paths_by_class)
        for name, tally in results[key].items():
            print(f"{key:50} {name:10} " + ", ".join(f"{verdict} {count}" for verdict, count in tally.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"n_per_class": args.n, "data": args.data, "models": results}, indent=1) + "\n")
    return 0
