"""The visitor's card, a threshold at the edge of its range, and the report of a shown-anyway output: pure helpers."""

from __future__ import annotations

import pytest
from test_model_helpers import METADATA, _report

from model.artifact import Metrics
from model.operating_point import edge_of_range, operating_point
from model.report import report_lines
from model.visitor_card import default_map_method, visitor_card

SCORES = {"NORMAL": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6],
          "PNEUMONIA": [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.999]}
TESTED = METADATA.replace(metrics=Metrics(validation={}, test={"scores": SCORES, "n": 18, "roc_auc": 0.9412}))
POPULATION = {"model_sha256": METADATA.sha256,
              "leave_one_source_out": {"a": {"by_group": {"adult normal": {"n": 100, "flagged": 0.9, "silent_wrong": 0.05},
                                                          "child aged 6-17": {"n": 50, "flagged": 0.2, "silent_wrong": 0.5}}},
                                       "b": {"by_group": {"adult pneumonia": {"n": 300, "flagged": 0.8, "silent_wrong": 0.01}}}},
              "shipped_gate": {"pediatric test (official test split)": {"n": 600, "flagged": 0.031}}}
FAITHFULNESS = {"n_per_class": 30, "models": {"model/shipped/m.keras": {
    "shown_first": "gradcam", "supports": {"gradcam": {"NORMAL": 0.9, "PNEUMONIA": 0.6}},
    "controls": {"edges": {"NORMAL": 0.1, "PNEUMONIA": 0.45}, "random noise": {"NORMAL": 0.0, "PNEUMONIA": 0.02}}}}}


@pytest.mark.parametrize("threshold, called, does", [
    (0.005, "PNEUMONIA", "calls almost every X-ray PNEUMONIA, normal ones too (specificity 0.0%)"),  # no normal cleared
    (0.015, "PNEUMONIA", "calls 88% of normal X-rays PNEUMONIA (specificity 12.5%)"),  # 1 of 8 normals cleared
    (0.25, None, None),  # 4 of 8 normals cleared: not below half, so not at the edge
    (0.995, "NORMAL", "calls 90% of pneumonia X-rays NORMAL (sensitivity 10.0%)"),  # 1 of 10 pneumonias found
    (0.9995, "NORMAL", "calls almost every X-ray NORMAL, pneumonia ones too (sensitivity 0.0%)"),
])
def test_a_threshold_at_the_edge_says_what_it_does_from_the_recorded_scores(threshold, called, does):
    edge = edge_of_range(operating_point(TESTED, threshold, 0.2))
    if called is None:
        assert edge is None
        return
    assert edge.called == called
    assert edge.meaning == f"Threshold {threshold:.3f} is at the edge of the range: on the official test split it {does}."
    assert "says little about this image" in edge.caution(called)
    assert edge.caution("NORMAL" if called == "PNEUMONIA" else "PNEUMONIA") is None  # a call against it is strong


def test_an_edge_measured_on_validation_says_so_and_counts_shares():
    edge = edge_of_range(operating_point(METADATA, 0.3, 0.2))  # the validation table: specificity 0.3 at 0.3
    assert "validation split" in edge.meaning and "70% of normal X-rays PNEUMONIA (specificity 30.0%)" in edge.meaning


def test_the_visitors_card_takes_every_figure_from_the_records():
    card = visitor_card(TESTED.replace(model_file="m.keras"), POPULATION, FAITHFULNESS)
    text = dict(card.sections)
    assert list(text) == ["What it is for", "How good it is", "What it refuses", "The heatmap"]
    assert "18 X-rays" in text["How good it is"] and "94% of the time" in text["How good it is"]
    for row, (value, names) in zip(card.table, TESTED.thresholds.by_value().items(), strict=True):
        point = operating_point(TESTED, value, 0.5)
        assert row == {"setting": f"{' = '.join(n.capitalize() for n in names)} ({value:.3f}"
                                  + (", default)" if TESTED.thresholds.default in names else ")"),
                       "finds pneumonia": f"{point.sensitivity:.0%}", "clears normal": f"{point.specificity:.0%}"}
    # adults only, pooled by count: (100 * 0.9 + 300 * 0.8) / 400 flagged, (5 + 3) / 400 let through wrongly
    assert "stops 82% of adult X-rays" in text["What it refuses"] and "2.0% slip through" in text["What it refuses"]
    assert "wrongly stops 3.1% of real children's test X-rays" in text["What it refuses"]
    assert "Grad-CAM by default" in text["The heatmap"]
    assert "On 30 pneumonia and 30 normal test X-rays its map of the call passed that check 60% and 90% of the time; " \
        "maps that explain nothing passed it at most 45%." in text["The heatmap"]


def test_the_visitors_card_leaves_out_figures_it_cannot_vouch_for():
    stale = dict(POPULATION, model_sha256="f" * 64)  # made for another model file
    card = visitor_card(METADATA, stale, {"models": {}})
    text = dict(card.sections)
    assert "No figures on held-out X-rays" in text["How good it is"] and not card.table
    assert "%" not in text["What it refuses"] and "passed" not in text["The heatmap"]


def test_the_default_map_method_is_read_from_the_metadata_when_it_names_one():
    from model.artifact import ExplanationChoice

    assert default_map_method(METADATA) == "Grad-CAM"  # recorded before the rule: Grad-CAM
    chosen = ExplanationChoice("occlusion", "rule", {"occlusion": {}}, {}, {})
    assert default_map_method(METADATA.replace(explanation=chosen)) == "Occlusion"
    other = dict(FAITHFULNESS["models"]["model/shipped/m.keras"])  # a bench run of another map says nothing of this one
    card = visitor_card(TESTED.replace(model_file="m.keras", explanation=chosen), POPULATION, {"models": {"shipped": other}})
    assert "passed" not in dict(card.sections)["The heatmap"]


def test_the_report_of_a_shown_anyway_output_says_it_is_not_a_diagnosis():
    lines = dict(report_lines(_report(unreliable="UNRELIABLE: outside what this model knows.")))
    assert lines["Pneumonia probability (calibrated)"] == "0.420  (UNRELIABLE: not a diagnosis of this image)"
    assert "Decision at threshold" not in lines  # no call stated as a decision
    assert lines["Model's output, shown anyway"].startswith("would read PNEUMONIA at threshold")
    assert lines["Model's output, shown anyway"].endswith("not a diagnosis of this image")
    plain = dict(report_lines(_report()))
    assert plain["Decision at threshold"].startswith("PNEUMONIA") and "diagnosis" not in " ".join(plain.values())


def test_the_checks_words_never_speak_of_bright_areas():
    from model.faithfulness import FaithfulnessResult

    sentence, _ = FaithfulnessResult(0.15, 3.0, 3.2, 3.0, 0.1).describe("PNEUMONIA")  # the evidence rises
    assert "bright" not in sentence and "the areas it ranks highest are not what drives it" in sentence

