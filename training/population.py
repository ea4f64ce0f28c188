"""Measure the population gate across sources: who is flagged, who is answered wrongly without a warning.

Two parts, both from one command (``python -m training population-report``):

1. **Leave one source out**: for each source of counter-examples, the gate is
   refitted (same rule, same code as :func:`model.ood.fit_ood`) without it and
   measured on it, so the figures say how the gate does on an archive it never
   saw. The flag rate and the *silent-wrong* rate (not flagged, and the label at
   the default threshold is wrong: adult normals called PNEUMONIA, adult
   pneumonias called NORMAL) are reported per group (adult normal, adult
   pneumonia, child aged 6-17, other body part).
2. **The shipped gate as served**: every image through the app's own path
   (decode, preprocess, LiteRT, gate): pediatric validation and test X-rays,
   inverted test X-rays, the counter-example sources (in-sample: the gate was
   fitted on them), and the generated non-X-ray corpus.

The official test split is read only in part 2, to report.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from model.artifact import load_model
from model.ood import INSIDE, OodDetector, fit_ood, image_stats
from model.predictor import Predictor, calibrated_probability
from training import data as data_lib
from training.ood_eval import non_xray_corpus, served_prediction
from training.outside import inverted_copies, list_outside, load_outside
from training.train import _split_and_load, forward_all, scoring_forward

log = logging.getLogger(__name__)


def _rates(flagged: np.ndarray, wrong: np.ndarray | None, reasons: list) -> dict:
    out = {"n": int(len(flagged)), "flagged": round(float(np.mean(flagged)), 4) if len(flagged) else None,
           "reasons": dict(Counter(r or "accepted" for r in reasons))}
    if wrong is not None and len(flagged):
        out["wrong_without_gate"] = round(float(np.mean(wrong)), 4)
        out["silent_wrong"] = round(float(np.mean(wrong & ~flagged)), 4)
    return out


def _verdicts(detector: OodDetector, features: np.ndarray, stats) -> list:
    return [detector.check(f, s) for f, s in zip(features, stats)]


def _wrong(images, probabilities, threshold) -> np.ndarray | None:
    """Label wrong at ``threshold``, for chest X-rays labelled NORMAL or PNEUMONIA; None for anything else."""
    labels = [i.label for i in images]
    if not set(labels) <= {"NORMAL", "PNEUMONIA"}:
        return None
    return (np.asarray(probabilities) >= threshold) != (np.array(labels) == "PNEUMONIA")


def leave_one_source_out(model_path: str, data: str, outside: str) -> dict:
    """Refit the gate without each source in turn and measure it on that source."""
    model, meta = load_model(model_path)
    forward = scoring_forward(model, meta.feature_layer)
    split = meta.dataset["split"]
    _, _, (x_train, _), (x_val, _) = _split_and_load(data, 0, split["seed"], split["val_fraction"], meta.preprocessing)
    train_f = forward_all(forward, x_train)[1]
    val_f = forward_all(forward, x_val)[1]
    inverted_f = forward_all(forward, inverted_copies(x_train))[1]
    images, kept = load_outside(list_outside(outside), meta.preprocessing)
    logits, feats = forward_all(forward, images)
    probabilities = calibrated_probability(logits, meta.calibration.temperature)
    sources = np.array([i.source for i in kept])
    grey = image_stats(np.array([[0, 255]], np.uint8), 0.0)  # the image checks are not what is measured here
    report = {}
    for held in sorted(set(sources)):
        counter: dict[str, list] = {"inverted": [inverted_f]}
        for image, f in zip(kept, feats):
            if image.source != held:
                counter.setdefault(image.kind, []).append(f[None])
        detector = OodDetector(fit_ood(train_f, val_f, outside={k: np.concatenate(v) for k, v in counter.items()}))
        on_held = sources == held
        held_images = [i for i, h in zip(kept, on_held) if h]
        verdicts = _verdicts(detector, feats[on_held], [grey] * int(on_held.sum()))
        flagged = np.array([not v.in_distribution for v in verdicts])
        groups = np.array([i.group for i in held_images])
        wrong = _wrong(held_images, probabilities[on_held], meta.thresholds.default_value)
        report[held] = {"all": _rates(flagged, wrong, [v.reason for v in verdicts]),
                        "by_group": {g: _rates(flagged[groups == g], None if wrong is None else wrong[groups == g],
                                               [v.reason for v, k in zip(verdicts, groups == g) if k])
                                     for g in sorted(set(groups))},
                        "validation_flagged": round(float(np.mean(
                            [not v.in_distribution for v in _verdicts(detector, val_f, [grey] * len(val_f))])), 4)}
        log.info("held out %s: %s", held, json.dumps(report[held]["all"]))
    return report


def _served(predictor: Predictor, blobs) -> tuple[np.ndarray, list, np.ndarray]:
    """(flagged, reasons, probabilities) through the app's own path; an unreadable file counts as flagged."""
    flagged, reasons, probabilities = [], [], []
    for blob in blobs:
        prediction = served_prediction(predictor, blob)
        if prediction is None:
            flagged.append(True), reasons.append("unreadable"), probabilities.append(np.nan)
            continue
        flagged.append(not prediction.ood.in_distribution)
        reasons.append(prediction.ood.reason)
        probabilities.append(prediction.probability)
    return np.array(flagged), reasons, np.array(probabilities)


def _inverted_bytes(path: Path) -> bytes:
    buffer = io.BytesIO()
    ImageOps.invert(Image.open(path).convert("L")).save(buffer, "PNG")
    return buffer.getvalue()


def shipped_gate(model_path: str, data: str, outside: str) -> dict:
    """Flag rates of the model's own gate, as served, per kind of image."""
    predictor = Predictor.load(model_path)
    meta = predictor.metadata
    threshold = meta.thresholds.default_value
    split = meta.dataset["split"]
    examples = data_lib.list_split(data, "train")
    _, val_examples = data_lib.patient_split(examples, split["val_fraction"], split["seed"])
    test = data_lib.list_split(data, "test")
    kinds = {"pediatric validation (clean, where the thresholds were set)": [e.path.read_bytes() for e in val_examples],
             "pediatric test (official test split)": [e.path.read_bytes() for e in test],
             "pediatric test, inverted (negative)": [_inverted_bytes(e.path) for e in test],
             "non-X-ray (generated corpus)": [blob for _, blob in non_xray_corpus()]}
    report = {}
    for kind, blobs in kinds.items():
        flagged, reasons, _ = _served(predictor, blobs)
        report[kind] = _rates(flagged, None, reasons)
    images = list_outside(outside)
    for source in sorted({i.source for i in images}):
        for group in sorted({i.group for i in images if i.source == source}):
            chosen = [i for i in images if i.source == source and i.group == group]
            flagged, reasons, probabilities = _served(predictor, [i.path.read_bytes() for i in chosen])
            report[f"{source}: {group} (fitted source, in-sample)"] = _rates(flagged, _wrong(chosen, probabilities, threshold), reasons)
    return report


def feature_source_comparison(features: str, layers=None) -> dict:
    """Issue 28's comparison from the cache of ``python -m training gate-features``: every candidate layer of each
    classifier network and of frozen ImageNet Lite0, leave one source out (fitted gates reused from
    ``FEATURES/sections``), and the whole-data gate's flag rate on clean validation and on the official test split
    (reporting only: the choice was made on the folds)."""
    from training.feature_sources import CANDIDATE_LAYERS, IMAGENET
    from training.gate_compare import Cache, full_gate_flags, leave_one_source_out

    cache = Cache(features, Path(features) / "sections")
    models = [m for m in cache.index["models"] if m in cache.networks]
    rows = []
    for layer in layers or CANDIDATE_LAYERS:
        for network, judged in [(m, [m]) for m in models] + [(IMAGENET, models)]:
            if network not in cache.networks:
                continue  # not extracted
            whole = cache.sections / f"{network}_{layer}_mean_all.json"
            flags = full_gate_flags(cache, network, layer, with_test=True) if whole.exists() else None
            for row in leave_one_source_out(cache, network, judged, layer):
                rows.append(dict(row, whole_gate=flags))
    return {"models": cache.index["models"], "rows": rows}


def _cache_name(features: str, meta) -> list[str]:
    """The cache's name(s) for this model's network (matched by the .keras checksum)."""
    index = json.loads((Path(features) / "index.json").read_text())
    return [name for name, m in index["models"].items() if m["sha256"] == meta.sha256]


def population_report(model: str, data: str, outside: str, out: str, features: str | None = None,
                      layers: list[str] | None = None) -> dict:
    meta = Predictor.load(model).metadata
    population = (meta.ood or {}).get("population")
    if population is None:
        raise ValueError(f"{model} has no population head; refit it with --outside first")
    report = {"model_sha256": meta.sha256, "model_version": meta.model_version,
              "default_threshold": meta.thresholds.default_value,
              "rule": {"distance": meta.ood.get("threshold_rule"), "population": population.get("threshold_rule"),
                       "method": population.get("method"), "classes": population.get("classes"),
                       "counts": population.get("counts"), "inside": INSIDE},
              "feature_source": meta.ood.get("feature_source")}
    if features:  # the shipped rule on the cached features of this model (the same images, the same pass)
        report["feature_sources"] = feature_source_comparison(features, layers)
        layer = (meta.ood.get("feature_source") or {}).get("layer")
        shipped = [r for r in report["feature_sources"]["rows"]
                   if r["layer"] == layer and r["network"] == r["model"] and r["model"] in _cache_name(features, meta)]
        if not shipped:
            raise ValueError(f"{features} has no cached leave-one-source-out run of {layer} for this model")
        report["leave_one_source_out"] = shipped[0]["by_source"]
        from training.gate_compare import Cache, children_held_out

        report["children_held_out_by_patient"] = children_held_out(
            Cache(features, Path(features) / "sections"), shipped[0]["network"], layer)
    else:
        report["leave_one_source_out"] = leave_one_source_out(model, data, outside)
    report["shipped_gate"] = shipped_gate(model, data, outside)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report
