"""Which heatmap does a visitor see first? The rule written in ``training/card_notes.md``, applied per model on
validation X-rays carved from ``train/`` (never test), and recorded in the model's metadata.

For a fixed draw of validation X-rays of each class, every candidate method explains the model's own call at
the default threshold and its map goes through the deletion check the app shows
(:func:`model.faithfulness.deletion_check`). Its cascade randomisation (:mod:`model.sanity`) says whether it
depends on the network's top at all, and its extra passes what a visitor waits. Four control maps
(:func:`model.faithfulness.control_maps`) go through the same check beside the chosen one, so the record shows
how far the check separates a real map from maps that explain nothing.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from model.artifact import CLASS_NAMES, SANITY_CEILING, ExplanationChoice
from model.explain import CAM_METHODS, CamExplainer
from model.faithfulness import VERDICTS, control_verdicts, deletion_check
from model.predictor import Predictor, label_for
from model.sanity import CASCADE, sanity
from model.service import target_log_odds_fn

log = logging.getLogger(__name__)

CANDIDATES = ("gradcam", "gradcam++", "scorecam", "occlusion-coarse", "occlusion", "occlusion-fine")
IMAGES_PER_CLASS = 60
SANITY_IMAGES_PER_CLASS = 20
SUPPORTS_FLOOR = 0.90  # share of each class whose map "supports" the call
MAX_EXTRA_PASSES = 85  # a visitor's wait of 1 s for map and check on two cores (8 ms a pass, 0.3 s for the check)
TIE = 0.03
RULE = ("Qualifies: supports the call on >= 90 % of each class of the validation draw, rank correlation <= 0.5 after "
        "the head and the top block are re-initialised, at most 85 extra passes. Shown first: the qualifying method "
        "with the highest lower-class supports share, ties within 3 points to fewer passes; if none qualifies, the "
        "same among those meeting the sanity and cost limits.")


def draw(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded draw of ``per_class`` images of each class, class by class."""
    rng = np.random.default_rng(seed)
    picked = []
    for index in range(len(CLASS_NAMES)):
        members = np.flatnonzero(np.asarray(labels).ravel() == index)
        picked += sorted(rng.choice(members, min(per_class, len(members)), replace=False))
    return np.asarray(picked, int)


def _verdicts(predictor: Predictor, images: np.ndarray, methods) -> tuple[dict, list[str], dict]:
    """Per method and true class, a Counter of verdicts on the model's own call; the calls; the maps (per image)."""
    explainer = CamExplainer.for_predictor(predictor)
    threshold = predictor.metadata.thresholds.default_value
    counts = {m: {name: Counter() for name in CLASS_NAMES} for m in methods}
    calls, maps = [], []
    for image, truth in images:
        prediction = predictor.predict(image[None])
        call = prediction.image(0)
        label = label_for(float(prediction.probabilities[0]), threshold)
        score = target_log_odds_fn(predictor, label)
        shown, memo = {}, {}
        for method in methods:
            heatmap = explainer.evidence(image, method, label, call, memo=memo).heatmap(per_image=True)
            counts[method][truth][deletion_check(score, image, heatmap).verdict] += 1
            shown[method] = heatmap
        calls.append(label)
        maps.append(shown)
    return counts, calls, maps


def _controls(predictor: Predictor, images, calls: list[str], maps: list[dict], method: str) -> dict:
    counts = {}
    for (image, truth), label, shown in zip(images, calls, maps):
        for name, verdict in control_verdicts(target_log_odds_fn(predictor, label), image, shown[method]).items():
            counts.setdefault(name, {c: Counter() for c in CLASS_NAMES})[truth][verdict] += 1
    return counts


def _share(counter: Counter) -> float:
    total = sum(counter.values())
    return counter["supports"] / total if total else 0.0


def choose(candidates: dict) -> str:
    """The rule (:data:`RULE`) over ``candidates``: method -> {"supports": {class: share}, "sanity": {...},
    "extra_passes": n}."""
    def lower(m):
        return min(candidates[m]["supports"].values())

    def within_limits(m):
        value = candidates[m]["sanity"].get(CASCADE[1])
        return value is not None and value <= SANITY_CEILING and candidates[m]["extra_passes"] <= MAX_EXTRA_PASSES

    pool = [m for m in candidates if within_limits(m) and lower(m) >= SUPPORTS_FLOOR] or \
        [m for m in candidates if within_limits(m)] or list(candidates)
    best = max(lower(m) for m in pool)
    return min((m for m in pool if lower(m) >= best - TIE), key=lambda m: (candidates[m]["extra_passes"], -lower(m)))


def fit_explanation(predictor: Predictor, model, x_val: np.ndarray, y_val: np.ndarray, methods=CANDIDATES,
                    per_class: int = IMAGES_PER_CLASS, sanity_per_class: int = SANITY_IMAGES_PER_CLASS) -> ExplanationChoice:
    """Measure every candidate on a seeded draw of validation X-rays and apply the rule; ``predictor`` is the
    served engine (LiteRT) of ``model``, ``x_val`` preprocessed (N, S, S, 1 or 3), ``y_val`` 0/1."""
    x_val = np.asarray(x_val, np.float32)
    if x_val.shape[-1] == 1:
        x_val = np.repeat(x_val, 3, axis=-1)
    labels = np.asarray(y_val).ravel()
    picked = draw(labels, per_class)
    images = [(x_val[i], CLASS_NAMES[labels[i]]) for i in picked]
    counts, calls, maps = _verdicts(predictor, images, methods)
    for_sanity = draw(labels[picked], sanity_per_class)
    randomised = sanity(model, predictor.metadata.network, np.stack([images[i][0] for i in for_sanity]),
                        [calls[i] for i in for_sanity], methods)
    candidates = {m: {"supports": {c: _share(counts[m][c]) for c in CLASS_NAMES},
                      "verdicts": {c: {v: counts[m][c][v] for v in VERDICTS} for c in CLASS_NAMES},
                      "sanity": randomised[m], "sanity_images": len(for_sanity),
                      "extra_passes": CAM_METHODS[m].extra_passes} for m in methods}
    default = choose(candidates)
    controls = _controls(predictor, images, calls, maps, default)
    log.info("explanation shown first: %s (%s)", default, candidates[default]["supports"])
    return ExplanationChoice(default, RULE, candidates,
                             {name: {c: _share(v[c]) for c in CLASS_NAMES} for name, v in controls.items()},
                             {c: int(np.sum(labels[picked] == i)) for i, c in enumerate(CLASS_NAMES)})
