"""``python -m model predict [--threshold T] [--model PATH] FILE...``

Prints one JSON object per line: ``file``, ``probability``, ``label``,
``threshold``; or ``file`` and ``error`` for a file that cannot be read. The
other files still run; the exit status is 1 if any file failed, 2 if no model
could be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Pediatric chest X-ray pneumonia classifier")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="classify image files (JPEG, PNG, DICOM)")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--model", default=None, help="path of a .keras model (default: the shipped model)")
    predict.add_argument("--threshold", type=float, default=None,
                         help="decision threshold in (0, 1) (default: the model's validation-chosen threshold)")
    return parser


def _predict_file(predictor, path: str, threshold: float | None) -> dict:
    from model.preprocessing import ImageInputError

    try:
        with open(path, "rb") as f:
            data = f.read()
        result = predictor.predict_bytes(data, threshold)
    except ImageInputError as exc:
        return {"file": path, "error": str(exc)}
    except OSError as exc:
        return {"file": path, "error": f"cannot read the file: {exc.strerror or exc}"}
    return {"file": path, "probability": round(result.probability, 6), "label": result.label,
            "threshold": round(result.threshold, 6)}


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        print(json.dumps({"error": f"--threshold must be between 0 and 1, got {args.threshold}"}))
        return 2
    from model.artifact import ArtifactError
    from model.predictor import Predictor

    try:
        predictor = Predictor.load(args.model)
    except ArtifactError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    failed = False
    for path in args.files:
        line = _predict_file(predictor, path, args.threshold)
        failed |= "error" in line
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
