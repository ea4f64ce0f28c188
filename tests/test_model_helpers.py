"""Operating points, the faithfulness check and the report: pure helpers in model/."""

from __future__ import annotations

import numpy as np
import pytest

from model.faithfulness import IMPUTATION_NOISE, deletion_check, noisy_linear_imputation
from model.operating import operating_point, predictive_values, threshold_presets
from model.report import render_report

METADATA = {
    "operating_points": [{"threshold": t, "sensitivity": 1 - t / 2, "specificity": t} for t in (0.1, 0.2, 0.3)],
    "thresholds": {"default": "balanced", "balanced": {"value": 0.2, "rule": "r"}, "screening": {"value": 0.1, "rule": "r"}},
    "model_name": "m", "backbone": "b", "created": "2026-11-22T00:00:00", "sha256": "0" * 64, "metrics": {},
}


def test_predictive_values_hand_checked():
    # sensitivity 0.9, specificity 0.8, prevalence 0.1: PPV = .09 / (.09 + .18) = 1/3; NPV = .72 / (.72 + .01)
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(1 / 3) and npv == pytest.approx(0.72 / 0.73)
    assert predictive_values(0.0, 1.0, 0.5) == (None, 0.5)
    with pytest.raises(ValueError):
        predictive_values(0.9, 0.8, 1.5)


def test_operating_point_uses_nearest_tabulated_threshold():
    point = operating_point(METADATA, 0.21, 0.5)
    assert (point.sensitivity, point.specificity) == (0.9, 0.2)
    assert threshold_presets(METADATA) == {"balanced": 0.2, "screening": 0.1}


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


def test_report_renders_png_and_pdf():
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    overlay = np.repeat(gray[:, :, None], 3, axis=2)
    point = operating_point(METADATA, 0.2, 0.3)
    png = render_report(gray, overlay, 0.42, "PNEUMONIA", point, METADATA, "Grad-CAM", "png")
    pdf = render_report(gray, overlay, 0.42, "PNEUMONIA", point, METADATA, "Grad-CAM", "pdf")
    assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF")
    with pytest.raises(ValueError):
        render_report(gray, overlay, 0.42, "PNEUMONIA", point, METADATA, "Grad-CAM", "tiff")
