"""Out-of-distribution gate: fitting, encoding, image checks, and its use by the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import encode, synthetic_xray
from PIL import Image

from model.ood import ImageStats, OodDetector, fit_ood

GRAY = ImageStats(colorfulness=0.0, gray_std=40.0)


@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.1, 64)
    train, val = rng.normal(0, 1, (2000, 64)) * scales, rng.normal(0, 1, (1000, 64)) * scales
    section = fit_ood(train, val, components=8, quantile=0.99)
    return OodDetector(json.loads(json.dumps(section))), scales, rng  # survives a JSON round trip


def test_validation_quantile_sets_the_false_rejection_rate(detector):
    ood, scales, rng = detector
    fresh = rng.normal(0, 1, (4000, 64)) * scales
    rate = np.mean([not ood.check(f, GRAY).in_distribution for f in fresh])
    assert 0.002 < rate < 0.03


def test_far_features_are_rejected(detector):
    ood, scales, rng = detector
    shifted = rng.normal(0, 1, 64) * scales + 3 * scales
    odd_direction = np.zeros(64)
    odd_direction[-1] = 40.0  # far along an axis outside the principal subspace
    for features in (shifted, odd_direction):
        verdict = ood.check(features, GRAY)
        assert not verdict.in_distribution and verdict.reasons == ("features",) and verdict.distance > 1


def test_image_checks(detector):
    ood, scales, _ = detector
    typical = np.zeros(64)
    assert ood.check(typical, GRAY).in_distribution
    colored = ood.check(typical, ImageStats(colorfulness=0.3, gray_std=40.0))
    assert colored.reasons == ("colour",) and "in colour (colour spread 0.30" in colored.message
    assert ood.check(typical, ImageStats(0.0, 1.0)).reasons == ("blank",)


def test_decoder_measures_colorfulness():
    from skimage import data as skdata

    from model.preprocessing import prepare

    assert prepare(encode(Image.fromarray(skdata.astronaut()), "JPEG")).colorfulness > 0.1
    gray_as_rgb = Image.fromarray(synthetic_xray(3)).convert("RGB")
    assert prepare(encode(gray_as_rgb, "JPEG")).colorfulness < 0.02


def test_cli_flags_a_photograph(tiny_model, tmp_path, capsys):
    from skimage import data as skdata

    from model.__main__ import main

    photo = tmp_path / "cat.png"
    Image.fromarray(skdata.chelsea()).save(photo)
    assert main(["predict", "--model", str(tiny_model), str(photo)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["ood"]["in_distribution"] is False and "colour" in line["ood"]["reasons"]
