"""The visitor's model card: one phone screen of plain sentences and one small table, from recorded figures only.

What the model is for, how good it is on the official test split, what it refuses and why, and what the heatmap
can and cannot tell. Every figure comes from the model's metadata and its report JSONs (the population gate's
``population.json``, the heatmap check's ``bench/faithfulness.json``); a report that is missing, or that was made
for another model file, leaves its sentence without figures rather than with wrong ones. Pure: no Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from model.artifact import ModelMetadata
from model.explain import CAM_METHODS
from model.operating_point import operating_point
from model.service import shown_first


@dataclass(frozen=True)
class VisitorCard:
    sections: tuple[tuple[str, str], ...]  # (heading, plain sentences), in reading order
    table: tuple[dict[str, str], ...]  # one row per preset threshold: what it finds and clears on the test split
    table_after: str  # the heading of the section the table follows


def default_map_method(metadata: ModelMetadata) -> str:
    """The label of the map method shown first (:func:`model.service.shown_first`)."""
    return CAM_METHODS[shown_first(metadata)].label


def _adults_from_unseen_archives(population: Mapping | None, sha256: str) -> tuple[float, float] | None:
    """(share flagged, share let through with a wrong call) over the adult X-rays of the leave-one-source-out
    runs (each archive measured by a gate refitted without it), pooled by count; None without a matching report."""
    if not population or population.get("model_sha256") != sha256:
        return None
    groups = [group for source in population.get("leave_one_source_out", {}).values()
              for name, group in source.get("by_group", {}).items() if name.startswith("adult")]
    n = sum(group["n"] for group in groups)
    if not n:
        return None
    return (sum(group["n"] * group["flagged"] for group in groups) / n,
            sum(group["n"] * group.get("silent_wrong", 0.0) for group in groups) / n)


def _children_flagged(population: Mapping | None, sha256: str) -> float | None:
    if not population or population.get("model_sha256") != sha256:
        return None
    test = [v for k, v in population.get("shipped_gate", {}).items() if "official test split" in k]
    return test[0]["flagged"] if test else None


def _map_check_rates(faithfulness: Mapping | None, metadata: ModelMetadata) -> tuple[dict, float, int] | None:
    """(class -> share the map shown first passed its check, the best control's share, X-rays a class) on the test
    split for the shipped model, from ``python -m bench faithfulness``'s JSON; None when it measured another map."""
    if not faithfulness:
        return None
    models = faithfulness.get("models", {})
    result = models.get(f"model/shipped/{metadata.model_file}") or models.get("shipped")
    if not result or result.get("shown_first") != shown_first(metadata):
        return None
    controls = [share for per in result.get("controls", {}).values() for share in per.values()]
    return result["supports"][result["shown_first"]], max(controls, default=0.0), faithfulness.get("n_per_class", 0)


def visitor_card(metadata: ModelMetadata, population: Mapping | None = None,
                 faithfulness: Mapping | None = None) -> VisitorCard:
    """The card's words and table for ``metadata``; ``population`` and ``faithfulness`` are the report JSONs."""
    test = metadata.metrics.test or {}
    sections = [("What it is for", "It reads a frontal chest X-ray of a child aged 1–5 and gives the chance of "
                                   "pneumonia, with a map of where its evidence lies. A research demo: never a diagnosis.")]
    rows = []
    if test.get("scores"):
        n = test.get("n") or sum(len(v) for v in test["scores"].values())
        sections.append(("How good it is", f"On the official test split, {n} X-rays of children it never saw, it ranks "
                                            f"a pneumonia X-ray above a normal one {test['roc_auc']:.0%} of the time. "
                                            "At each setting:"))
        for value, names in metadata.thresholds.by_value().items():
            point = operating_point(metadata, value, 0.5)  # sensitivity and specificity do not depend on prevalence
            default = ", default" if metadata.thresholds.default in names else ""
            rows.append({"setting": f"{' = '.join(n.capitalize() for n in names)} ({value:.3f}{default})",
                         "finds pneumonia": f"{point.sensitivity:.0%}", "clears normal": f"{point.specificity:.0%}"})
    else:
        sections.append(("How good it is", "No figures on held-out X-rays are recorded for this model."))
    refuses = ("Anything but a young child's chest X-ray (an adult, another body part, a negative, a photo): it learned "
               "only from those, so it withholds its answer.")
    adults, children = (_adults_from_unseen_archives(population, metadata.sha256),
                        _children_flagged(population, metadata.sha256))
    if adults:
        refuses += (f" It stops {adults[0]:.0%} of adult X-rays from archives it was not fitted on; {adults[1]:.1%} "
                    "slip through with a wrong answer.")
    if children is not None:
        refuses += f" It also wrongly stops {children:.1%} of real children's test X-rays."
    sections.append(("What it refuses", refuses))
    heatmap = (f"The map ({default_map_method(metadata)} by default) shows where the evidence lies, not what is "
               "wrong; it is checked by hiding the areas it ranks highest.")
    rates = _map_check_rates(faithfulness, metadata)
    if rates:
        supports, control, n = rates
        heatmap += (f" On {n} pneumonia and {n} normal test X-rays its map of the call passed that check "
                    f"{supports['PNEUMONIA']:.0%} and {supports['NORMAL']:.0%} of the time; maps that explain nothing "
                    f"passed it at most {control:.0%}.")
    sections.append(("The heatmap", heatmap))
    return VisitorCard(tuple(sections), tuple(rows), "How good it is")
