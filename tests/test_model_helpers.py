"""Operating points, the faithfulness check and the report: pure helpers in model/."""

from __future__ import annotations

import numpy as np
import pytest

from model.artifact import Calibration, Metrics, ModelMetadata, Threshold, Thresholds, ValidationPoint
from model.faithfulness import IMPUTATION_NOISE, FaithfulnessResult, deletion_check, noisy_linear_imputation
from model.operating_point import operating_point, predictive_values
from model.preprocessing import PreprocessConfig
from model.report import ReportContent, render_report, report_figure

METADATA = ModelMetadata(
    model_name="m", created="2026-11-22T00:00:00", backbone="b", input_size=224, preprocessing=PreprocessConfig(),
    feature_layer="avg_pool", cam_layer="top_activation", logit_layer="logit", calibration=Calibration("t", 1.0),
    thresholds=Thresholds("balanced", {"balanced": Threshold(0.2, "r"), "screening": Threshold(0.1, "r")}),
    operating_points=tuple(ValidationPoint(t, 1 - t / 2, t) for t in (0.1, 0.2, 0.3)),
    metrics=Metrics(validation={}), training={}, dataset={}, model_file="m.keras", sha256="0" * 64)


def test_predictive_values_hand_checked():
    # sensitivity 0.9, specificity 0.8, prevalence 0.1: PPV = .09 / (.09 + .18) = 1/3; NPV = .72 / (.72 + .01)
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(1 / 3) and npv == pytest.approx(0.72 / 0.73)
    assert predictive_values(0.0, 1.0, 0.5) == (None, 0.5)
    with pytest.raises(ValueError):
        predictive_values(0.9, 0.8, 1.5)


def test_operating_point_falls_back_to_the_validation_table_and_says_so():
    point = operating_point(METADATA, 0.21, 0.5)
    assert (point.sensitivity, point.specificity) == (0.9, 0.2)
    assert not point.held_out and "optimistic" in point.source
    assert METADATA.thresholds.values() == {"balanced": 0.2, "screening": 0.1} and METADATA.thresholds.default_value == 0.2
    screening_default = Thresholds("screening", METADATA.thresholds.named)
    assert list(screening_default.values()) == ["screening", "balanced"]  # threshold order, whichever is the default
    clamped = Thresholds("balanced", {"confirmatory": Threshold(0.2, "r"), "balanced": Threshold(0.2, "r"),
                                      "screening": Threshold(0.1, "r")})
    assert clamped.by_value() == {0.1: ["screening"], 0.2: ["balanced", "confirmatory"]}  # one choice, rules' order


def test_held_out_operating_point_is_exact_at_any_threshold():
    scores = {"NORMAL": [0.1, 0.2, 0.3, 0.6], "PNEUMONIA": [0.25, 0.5, 0.7, 0.9, 0.95]}
    meta = METADATA.replace(metrics=Metrics(validation={}, test={"scores": scores}))
    point = operating_point(meta, 0.5, 0.2)  # p >= 0.5 is PNEUMONIA: 4 of 5 found, 3 of 4 normals cleared
    assert point.held_out and "official test split, 9 images (4 normal, 5 pneumonia)" == point.source
    assert (point.sensitivity, point.specificity) == (0.8, 0.75)
    assert operating_point(meta, 0.2236, 0.2).specificity == 0.5  # between tabulated steps: still exact


def test_deletion_check_detects_a_faithful_heatmap():
    image = np.zeros((64, 64, 3), np.float32)
    image[16:32, 16:32] = 1.0  # the only evidence
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[16:32, 16:32] = 1.0
    evidence = lambda batch: batch[:, 16:32, 16:32, 0].mean(axis=(1, 2))  # noqa: E731
    result = deletion_check(evidence, image, heatmap, fraction=0.0625, n_random=8)
    assert result.original == pytest.approx(1.0)
    assert result.cam_drop > 0.3 and result.random_drop == pytest.approx(0.0) and result.faithful
    wrong = np.zeros_like(heatmap)
    wrong[40:56, 40:56] = 1.0
    assert not deletion_check(evidence, image, wrong, fraction=0.0625).faithful
    # the caller's own score of the image (the prediction's) replaces a second pass of it, to the same result
    assert deletion_check(evidence, image, heatmap, fraction=0.0625, original=1.0) == result


def test_imputation_fills_smoothly_and_keeps_the_rest():
    ramp = np.linspace(0.1, 0.9, 48, dtype=np.float32)
    image = np.repeat((ramp[:, None] + ramp[None, :])[:, :, None] / 2, 3, axis=2)
    mask = np.zeros((48, 48), np.float32)
    mask[10:30, 5:25] = 1.0
    mask[:4, -6:] = 1.0  # touching the border
    filled = noisy_linear_imputation(image, mask, np.random.default_rng(0))
    hidden = mask > 0.5
    np.testing.assert_array_equal(filled[~hidden], image[~hidden])
    assert np.abs(filled[hidden] - image[hidden]).max() < 5 * IMPUTATION_NOISE  # a plane is its neighbours' mean
    assert filled[hidden].std() > 0.0 and 0.0 <= filled.min() and filled.max() <= 1.0


def test_imputation_of_a_grey_image_is_solved_once_and_a_fixed_mask_is_factorised_once():
    from model.faithfulness import _kept_imputation

    rng = np.random.default_rng(5)
    image = np.repeat(0.3 + 0.4 * rng.random((40, 40, 1), np.float32), 3, axis=2)  # grey, never clipped
    mask = np.zeros((40, 40), np.float32)
    mask[8:24, 16:32] = 1.0
    _kept_imputation.cache_clear()
    fresh = noisy_linear_imputation(image, mask, np.random.default_rng(1))
    kept = [noisy_linear_imputation(image, mask, np.random.default_rng(1), keep_system=True) for _ in range(2)]
    assert _kept_imputation.cache_info().hits == 1  # the second solve reused the kept factorisation
    np.testing.assert_array_equal(kept[0], fresh)
    np.testing.assert_array_equal(kept[1], fresh)
    hidden = mask > 0.5
    noise = np.random.default_rng(1).normal(0, IMPUTATION_NOISE, (int(hidden.sum()), 3))
    solved = fresh[hidden] - noise  # one solution, copied to the three channels, each with its own noise
    np.testing.assert_allclose(solved[:, 1:], np.repeat(solved[:, :1], 2, axis=1), atol=1e-6)
    colour = image.copy()
    colour[..., 2] = 1.0 - colour[..., 2]  # channels differ: each solved on its own
    filled = noisy_linear_imputation(colour, mask, np.random.default_rng(1))
    assert np.abs((filled[hidden] - noise)[:, 2] - (1.0 - solved[:, 0])).max() < 1e-5


@pytest.mark.parametrize("cam_removed, random_removed, spread, verdict", [
    (1.0, 3.0, 0.1, "supports"),  # falls by 2.0, random removal by 0.0: both clear the margin of 0.25
    (1.0, 3.0, 1.5, "weak"),  # the same fall, but random removals spread so wide that the margin is 3.0
    (2.5, 4.0, 0.1, "weak"),  # falls by 0.5 while random removal RAISES it by 1.0: the in-fill moves it more
    (1.8, 3.4, 0.1, "supports"),  # falls by 1.2, random removal raises it by 0.4
    (2.8, 4.5, 0.1, "weak"),  # falls by 0.2 (< margin) although 1.7 beyond random removal: cannot flatter
    (3.2, 3.0, 0.1, "does not support"),  # the evidence rises
    (2.0, 2.5, 0.6, "does not support"),  # falls by 1.0, random removal by 0.5: within one spread of random
])
def test_faithfulness_verdict_is_three_way_with_a_margin(cam_removed, random_removed, spread, verdict):
    result = FaithfulnessResult(0.15, 3.0, cam_removed, random_removed, spread)
    assert result.verdict == verdict and result.faithful == (verdict == "supports")
    sentence, detail = result.describe("PNEUMONIA")
    assert sentence.startswith({"supports": "The map supports", "weak": "The map supports this output only weakly",
                                "does not support": "The map does not support"}[verdict])
    assert "log-odds" not in sentence and "log-odds" in detail  # plain words first, the numbers on demand
    assert result.summary().startswith(verdict + ":")


def _report(unreliable=None, faithfulness=None):
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    overlay = np.repeat(gray[:, :, None], 3, axis=2)
    meta = METADATA.replace(model_name="pneumonia_efficientnet_lite0_with_a_long_name", backbone="efficientnet_lite0")
    gate = "flagged: " + "its features are 4.6× as far from the training X-rays as the farthest validation X-ray; " * 3
    return ReportContent("a very long file name " * 6 + ".png", gray, overlay, "Grad-CAM (evidence for pneumonia)", 0.42,
                         "PNEUMONIA", operating_point(meta, 0.2, 0.3), meta, gate, unreliable,
                         ("Borderline: close to the threshold.",) * 3, faithfulness, "PNEUMONIA",
                         "Little evidence for pneumonia anywhere in this image: its strongest spot reaches only 3% of full colour.")


def test_report_carries_the_faithfulness_verdict_and_where_figures_were_measured():
    from model.report import report_lines

    check = FaithfulnessResult(0.15, 1.27, 0.82, 2.7, 0.3)
    lines = dict(report_lines(_report(faithfulness=check)))
    assert lines["Does the map explain the output?"].startswith("The map supports this output only weakly")
    assert check.summary() in lines["Does the map explain the output?"]
    assert lines["Heatmap"].startswith("Little evidence for pneumonia anywhere")
    assert any(key.startswith("Sensitivity / specificity at this threshold, measured on the validation split")
               for key in lines)
    everything = " ".join(t.get_text() for t in report_figure(_report(faithfulness=check)).texts).replace("\n", " ")
    assert "weak: removing the top 15%" in everything


def test_report_renders_png_and_pdf():
    png, pdf = render_report(_report(), "png"), render_report(_report(), "pdf")
    assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF")
    with pytest.raises(ValueError):
        render_report(_report(), "tiff")


def test_report_text_stays_inside_the_page_and_marks_unreliable_output():
    figure = report_figure(_report(unreliable="UNRELIABLE: unlike the X-rays the model was trained on: it is in colour."))
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    texts = [t for t in figure.texts if t.get_text().strip()]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text.get_text()
    everything = " ".join(t.get_text() for t in texts)
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):  # nothing overlaps: no line hidden under another
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0, (a, b)
    for fact in ("a very long file name", "UNRELIABLE", "Generated", "SHA-256", "0" * 64, "Not a medical device"):
        assert fact in everything.replace("\n", " ") or fact in everything.replace("\n", ""), fact


def test_report_never_parses_mathtext_and_shortens_long_names():
    """A file name with $...$ prints as typed (no mathtext: '$\\foo$' used to make both downloads fail), and a
    5,000-character name is shortened to its start and end."""
    from dataclasses import replace

    from model.report import MAX_FILE_NAME_CHARS, short_name

    for name in ("chest_$\\foo$.png", "chest_$\\mathbf{PNEUMONIA\\ NEGATIVE}$.png"):
        content = replace(_report(), file_name=name)
        assert render_report(content, "png")[:4] == b"\x89PNG" and render_report(content, "pdf")[:4] == b"%PDF"
        texts = [t for t in report_figure(content).texts if name in t.get_text()]
        assert texts and all(t._parse_math is False for t in texts)
    long = "a" * 2500 + "b" * 2500 + ".png"
    shortened = short_name(long)
    assert len(shortened) == MAX_FILE_NAME_CHARS and shortened.startswith("aaa") and shortened.endswith("b.png")
    assert short_name("chest.png") == "chest.png"


def _accepted_prediction(probability: float):
    from model.ood import ImageStats, OodVerdict
    from model.service import Prediction

    return Prediction(probability, OodVerdict(True, (), 0.2, ImageStats(0.0, 0.2)))


def test_one_trust_verdict_from_the_map_shown_first_reaches_the_rows_and_the_csv():
    """trust_of asks for the check of the map shown first of the call's own class, and the table and CSV carry
    exactly that verdict (its level, its reasons, its short notes)."""
    from model.service import BatchItem, results_rows, rows_to_csv, trust_of

    failing = FaithfulnessResult(0.15, 3.0, 3.2, 2.9, 0.1)  # hiding the map's areas raises the evidence
    assert failing.verdict == "does not support"
    asked = []
    prediction = _accepted_prediction(0.97)
    trust = trust_of(prediction, 0.5, "occlusion", lambda method, label: asked.append((method, label)) or failing)
    assert asked == [("occlusion", "PNEUMONIA")]
    assert trust.level == "caution" and trust.notes == ("heatmap check failed",)
    assert "Occlusion map of the evidence for pneumonia" in trust.reasons[0]
    row = results_rows([BatchItem(1, "a.png", prediction, None)], 0.5, trusts={1: trust})[0]
    assert row["trust"] == "caution" and row["message"] == " ".join(trust.reasons)
    assert "caution" in rows_to_csv([row]) and "heatmap check failed" in rows_to_csv([row])
    plain = results_rows([BatchItem(1, "a.png", prediction, None)], 0.5)[0]  # without the map's check
    assert plain["trust"] == "no warning"
    supported = FaithfulnessResult(0.15, 3.0, 1.0, 2.9, 0.1)
    assert trust_of(prediction, 0.5, "occlusion", lambda m, label: supported).level == "no warning"
