"""Compare feature sources for the population gate on the same folds, for two networks, on cached features.

Reads what ``python -m training gate-features`` wrote (``features_{network}.npz``
and ``index.json``) and, for every candidate layer of each classifier network
and of the frozen ImageNet Lite0, refits the gate with :func:`model.ood.fit_ood`
leaving one source of counter-examples out at a time and measures it on that
source. Silent wrong is always judged with the classifier's own label at its
default threshold (an ImageNet-feature gate guards v2.3's and v3's answers alike).

The test split is read only when ``with_test`` is set: after the choice.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from model.ood import ADULT_ODDS, CHEST_NAME_QUANTILE, OodDetector, fit_ood, kind_distance_limits
from training.feature_sources import CANDIDATE_LAYERS, IMAGENET
from training.outside import ADULT_AGE

log = logging.getLogger(__name__)

CHEST_REASONS = ("adult_chest", "unfamiliar_chest")  # names that call an image a chest X-ray


class Cache:
    def __init__(self, folder: str | Path, sections: str | Path | None = None):
        folder = Path(folder)
        self.sections = Path(sections) if sections else None  # fitted gates kept here, reused when asked again
        if self.sections:
            self.sections.mkdir(parents=True, exist_ok=True)
        self.index = json.loads((folder / "index.json").read_text())
        self.networks = {}
        for path in sorted(folder.glob("features_*.npz")):
            try:
                self.networks[path.stem.removeprefix("features_")] = dict(np.load(path))
            except (OSError, ValueError, zipfile.BadZipFile) as exc:  # still being written by gate-features
                log.warning("skipping %s: %s", path.name, exc)
        self.external = self.index["external"]
        for row in self.external:  # children under 18 are their own kind (not adults), whatever the cache recorded
            if row["kind"] != "other_body_part":
                row["kind"] = "child_chest" if row["age"] is not None and row["age"] < ADULT_AGE else "adult_chest"

    def features(self, network: str, split: str, layer: str, pooling: str = "mean") -> np.ndarray:
        data = self.networks[network]
        parts = [data[f"{split}/{layer}:{p}"] for p in pooling.split("+")]
        return np.concatenate(parts, axis=1).astype(np.float64)

    def probabilities(self, model: str, split: str) -> np.ndarray:
        info = self.index["models"][model]
        return 1.0 / (1.0 + np.exp(-self.networks[model][f"{split}/logit"].astype(np.float64) / info["temperature"]))


def _fold_rates(reasons, wrong, mask) -> dict:
    flagged = np.array([r is not None for r in reasons])[mask]
    out = {"n": int(mask.sum()), "flagged": float(np.mean(flagged)) if mask.any() else None}
    if wrong is not None and mask.any():
        out["silent_wrong"] = float(np.mean(wrong[mask] & ~flagged))
        out["wrong_without_gate"] = float(np.mean(wrong[mask]))
    names = [r or "accepted" for r, m in zip(reasons, mask) if m]
    out["reasons"] = {r: names.count(r) for r in sorted(set(names))}
    return out


def _fitted(cache: Cache, key: str, fit, naming: dict | None, outside: dict) -> dict:
    """A fitted gate section, from ``cache.sections`` when this fold was fitted before (same features, same rule);
    the naming (kind distance limits under today's constants, and ``naming``: ``adult_odds``, ``chest_quantile``)
    is redone on the fold's counter-examples, so it follows the code, not the cache."""
    path = cache.sections / f"{key}.json" if cache.sections else None
    if path is not None and path.exists():
        section = json.loads(path.read_text())
    else:
        section = fit()
        if path is not None:
            path.write_text(json.dumps(section))
    naming = dict(naming or {})
    chest_quantile = naming.pop("chest_quantile", CHEST_NAME_QUANTILE)
    population = dict(section["population"], **{"adult_odds": ADULT_ODDS, **naming})
    population["kind_distance_limits"] = kind_distance_limits(
        OodDetector(section).distances, {k: outside[k] for k in population["classes"][1:]}, section["threshold"],
        chest_quantile)
    return dict(section, population=population)


def leave_one_source_out(cache: Cache, network: str, models, layer: str, pooling: str = "mean",
                         naming: dict | None = None, **options) -> list[dict]:
    """Gate on ``network``'s ``layer`` features, refitted without each source; one row per model whose labels judge
    silent wrong (``options``: ``quantile`` of :func:`model.ood.fit_ood`; ``naming``: see :func:`_fitted`)."""
    f = {split: cache.features(network, split, layer, pooling) for split in ("train", "val", "inverted", "external")}
    ext = cache.external
    sources = np.array([r["source"] for r in ext])
    kinds = np.array([r["kind"] for r in ext])
    labels = np.array([r["label"] for r in ext])
    reasons: list = [None] * len(ext)
    val_flagged = {}
    for held in sorted(set(sources)):
        fit = sources != held
        outside = {"inverted": f["inverted"]}
        for kind in sorted(set(kinds[fit])):
            outside[kind] = f["external"][fit & (kinds == kind)]
        key = "_".join([network, layer, pooling, held] + [f"{k}{v}" for k, v in sorted(options.items())])
        detector = OodDetector(_fitted(cache, key, lambda o=outside: fit_ood(f["train"], f["val"], outside=o, **options),
                                       naming, outside))
        for i, r in zip(np.flatnonzero(~fit), detector.decide(f["external"][~fit])[0]):
            reasons[i] = r
        val_flagged[held] = float(np.mean([r is not None for r in detector.decide(f["val"])[0]]))
    reasons_arr = np.array([r or "" for r in reasons])
    groups = {"adult (NIH adults, Hannover)": kinds == "adult_chest",
              "NIH adult normal": (kinds == "adult_chest") & (sources == "nih") & (labels == "NORMAL"),
              "NIH adult pneumonia": (kinds == "adult_chest") & (sources == "nih") & (labels == "PNEUMONIA"),
              "Hannover": sources == "hannover",
              "child under 18 (NIH)": kinds == "child_chest",
              "knee": kinds == "other_body_part"}
    rows = []
    for model in models:
        wrong = (cache.probabilities(model, "external") >= cache.index["models"][model]["default_threshold"]) \
            != (labels == "PNEUMONIA")
        rows.append({"network": network, "model": model, "layer": layer, "pooling": pooling,
                     "validation_flagged_mean": float(np.mean(list(val_flagged.values()))),
                     "by_source": _by_source(reasons, wrong, sources, np.array([r["group"] for r in ext]), labels,
                                             val_flagged),
                     "groups": {g: _fold_rates(reasons, wrong if g != "knee" else None, m) for g, m in groups.items()},
                     "children_named_adult": int(np.sum(groups["child under 18 (NIH)"] & (reasons_arr == "adult_chest"))),
                     "knees_named_chest": int(np.sum(groups["knee"] & np.isin(reasons_arr, CHEST_REASONS)))})
    return rows


def _by_source(reasons, wrong, sources, groups, labels, val_flagged) -> dict:
    """The held-out figures per source and report group (the layout of ``population-report``)."""
    out = {}
    for held in sorted(set(sources)):
        chest = set(labels[sources == held]) <= {"NORMAL", "PNEUMONIA"}
        judged = wrong if chest else None
        out[held] = {"all": _fold_rates(reasons, judged, sources == held),
                     "by_group": {g: _fold_rates(reasons, judged, (sources == held) & (groups == g))
                                  for g in sorted(set(groups[sources == held]))},
                     "validation_flagged": val_flagged[held]}
    return out


def summary(row: dict) -> str:
    g = row["groups"]
    adult, child = g["adult (NIH adults, Hannover)"], g["child under 18 (NIH)"]
    return (f"{row['network']:9s} {row['layer']:26s} labels {row['model']:5s} adult flagged {adult['flagged']:.3f} "
            f"silent {adult['silent_wrong']:.3f} | child flagged {child['flagged']:.3f} silent {child['silent_wrong']:.3f}"
            f" named adult {row['children_named_adult']} | knees {g['knee']['flagged']:.3f} chest-named "
            f"{row['knees_named_chest']} | val {row['validation_flagged_mean']:.4f}")


def compare(cache_dir: str, models=("v2_3", "v3"), layers=CANDIDATE_LAYERS, pooling: str = "mean", **options) -> list[dict]:
    """Every candidate layer of each model's own network, and of frozen ImageNet Lite0 (judged with both models'
    labels)."""
    cache = Cache(cache_dir)
    rows = []
    for layer in layers:
        for network, judged in [(m, [m]) for m in models] + [(IMAGENET, list(models))]:
            for row in leave_one_source_out(cache, network, judged, layer, pooling, **options):
                rows.append(row)
                log.info("%s", summary(row))
    return rows


def full_gate_flags(cache: Cache, network: str, layer: str, pooling: str = "mean", with_test: bool = False,
                    naming: dict | None = None, **options) -> dict:
    """The gate fitted on every source (as shipped) over the cached features: flag rate of clean validation and,
    ``with_test``, of the official test split with its reasons (reporting only)."""
    f = {split: cache.features(network, split, layer, pooling) for split in ("train", "val", "inverted", "external")}
    kinds = np.array([r["kind"] for r in cache.external])
    outside = {"inverted": f["inverted"], **{k: f["external"][kinds == k] for k in sorted(set(kinds))}}
    key = "_".join([network, layer, pooling, "all"] + [f"{k}{v}" for k, v in sorted(options.items())])
    detector = OodDetector(_fitted(cache, key, lambda: fit_ood(f["train"], f["val"], outside=outside, **options),
                                   naming, outside))
    splits = ("val", "test") if with_test else ("val",)
    out = {}
    for split in splits:
        features = f[split] if split in f else cache.features(network, split, layer, pooling)
        reasons = detector.decide(features)[0]
        out[split] = _fold_rates(reasons, None, np.ones(len(reasons), bool))
    return out


def children_held_out(cache: Cache, network: str, layer: str, folds: int = 5, pooling: str = "mean",
                      naming: dict | None = None, **options) -> dict:
    """The shipped situation for a child of a hospital the gate knows: every source fitted except a fifth of the
    NIH children (grouped by patient), measured on them; repeated over the fifths. Counts how the held-out children
    are named (the floor: never adult)."""
    f = {split: cache.features(network, split, layer, pooling) for split in ("train", "val", "inverted", "external")}
    kinds = np.array([r["kind"] for r in cache.external])
    patients = np.array([f"{r['source']}:{Path(r['path']).stem.split('_')[0]}" for r in cache.external])
    child_patients = sorted(set(patients[kinds == "child_chest"]))
    order = np.random.default_rng(0).permutation(len(child_patients))
    reasons: dict[str, int] = {}
    for k in range(folds):
        held_patients = {child_patients[i] for i in order[k::folds]}
        held = np.isin(patients, list(held_patients))
        outside = {"inverted": f["inverted"], **{kind: f["external"][~held & (kinds == kind)]
                                                 for kind in sorted(set(kinds))}}
        key = "_".join([network, layer, pooling, f"children{k}of{folds}"] + [f"{a}{b}" for a, b in sorted(options.items())])
        detector = OodDetector(_fitted(cache, key, lambda o=outside: fit_ood(f["train"], f["val"], outside=o, **options),
                                       naming, outside))
        for r in detector.decide(f["external"][held & (kinds == "child_chest")])[0]:
            reasons[r or "accepted"] = reasons.get(r or "accepted", 0) + 1
    return {"n": int(np.sum(kinds == "child_chest")), "patients": len(child_patients), "folds": folds,
            "reasons": reasons}
