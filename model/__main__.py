"""``python -m model predict [--threshold T] [--model PATH] FILE...``

Prints one JSON object per line: ``file``, ``probability``, ``label``,
``threshold``, ``reliable``, ``reason`` (the population gate's reason code:
``accepted``, ``adult_chest``, ``unfamiliar_chest``, ``other_body_part``,
``inverted``, ``features``, ``colour``, ``blank``), ``trust`` (``no warning``, ``caution``, ``outside``) and
``ood`` (the gate's figures). With ``--check-map`` the trust verdict is the app's own: it also checks the map the
app shows first (the evidence for the call; about a second an image) and the line names it in ``map_check``;
without it, ``trust`` weighs the gate and a borderline call only, and ``map_check`` is ``null``.
An image the gate flags has ``reliable: false`` and a ``warning`` saying why its
probability means little; a borderline one has ``cautions``. A file that cannot
be read gets ``file`` and ``error``; the other files still run. The exit status
is 1 if any file failed, 2 if no model could be loaded.
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
    predict.add_argument("--model", default=None, help="a .keras model path, its .json and .tflite beside it (default: the shipped model)")
    predict.add_argument("--threshold", type=float, default=None,
                         help="decision threshold in (0, 1) (default: the model's validation-chosen threshold)")
    predict.add_argument("--check-map", action="store_true",
                         help="check the heatmap the app shows first too, as the app's trust verdict does (slower)")
    return parser


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else raises ImageInputError, unread.

    Opened without blocking (a FIFO would wait for a writer), checked with fstat on the open file (a regular file,
    no larger than ``limit``), then read with a bounded read (a file that grows meanwhile still stops at limit + 1).
    """
    import stat

    from model.preprocessing import ImageInputError

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, device or socket)"
            raise ImageInputError(f"This path is {kind}; only image files are read.")
        if info.st_size > limit:
            raise ImageInputError(f"The file is larger than {limit // 2**20} MB.")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageInputError(f"The file is larger than {limit // 2**20} MB.")
    return data


def _predict_file(predictor, path: str, threshold: float, check_map: bool = False) -> dict:
    from model.explain import CamExplainer
    from model.preprocessing import MAX_FILE_BYTES, ImageInputError
    from model.service import analyze_bytes, explain_with_check, reliability_note, shown_first, trust_of

    checks = {}
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
        analysis = analyze_bytes(predictor, data)
        prediction = analysis.prediction
        if check_map:
            def check_call(method, label):
                checks[method] = explain_with_check(predictor, CamExplainer.for_predictor(predictor), analysis, method, label)[1]
                return checks[method]
            trust = trust_of(prediction, threshold, shown_first(predictor.metadata), check_call)
        else:
            trust = prediction.trust(threshold)
    except ImageInputError as exc:
        return {"file": path, "error": str(exc)}
    except OSError as exc:
        return {"file": path, "error": f"cannot read the file: {exc.strerror or exc}"}
    except Exception as exc:  # one bad file never stops the others; nothing of the file is printed
        return {"file": path, "error": f"the file could not be processed ({type(exc).__name__})"}
    line = {"file": path, "probability": round(prediction.probability, 6), "label": prediction.label(threshold),
            "threshold": round(threshold, 6), "reliable": prediction.ood.in_distribution,
            "reason": prediction.ood.reason or "accepted", "trust": trust.level,
            "map_check": next(({"method": m, "verdict": c.verdict} for m, c in checks.items()), None),
            "ood": prediction.ood.to_dict()}
    if not prediction.ood.in_distribution:
        line["warning"] = reliability_note(prediction.ood)
    elif trust.reasons:
        line["cautions"] = list(trust.reasons)
    return line


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        print(json.dumps({"error": f"--threshold must be between 0 and 1, got {args.threshold}"}))
        return 2
    from model.artifact import ArtifactError
    from model.predictor import Predictor

    try:
        predictor = Predictor.load(args.model, lanes=2 if args.check_map else 1)  # a map: many passes, side by side
    except ArtifactError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    threshold = predictor.metadata.thresholds.default_value if args.threshold is None else args.threshold
    failed = False
    for path in args.files:
        line = _predict_file(predictor, path, threshold, args.check_map)
        failed |= "error" in line
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
