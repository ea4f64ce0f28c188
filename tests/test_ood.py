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
    assert colored.reasons == ("colour",) and "in colour" in colored.message and "colour spread 0.30" in colored.message
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


# --- The population head (outlier exposure): fitted deterministically, names the mismatch, sealed in the metadata.

def _clusters(seed: int, n: int = 400, dim: int = 24) -> dict[str, np.ndarray]:
    """Features of five populations: pediatric chest X-rays near 0, each outside kind shifted along its own axes."""
    rng = np.random.default_rng(seed)
    shifts = {"pediatric_chest": (), "child_chest": range(4, 8), "adult_chest": range(0, 4),
              "other_body_part": range(8, 12), "inverted": range(16, 20)}
    out = {}
    for name, axes in shifts.items():
        features = rng.normal(0, 1, (n, dim))
        features[:, list(axes)] += 4.0
        out[name] = features
    return out


@pytest.fixture(scope="module")
def population_gate():
    fit, val = _clusters(1), _clusters(2)
    outside = {k: v for k, v in fit.items() if k != "pediatric_chest"}
    section = fit_ood(fit["pediatric_chest"], val["pediatric_chest"], components=8, outside=outside)
    return section, OodDetector(json.loads(json.dumps(section)))


def test_population_fit_is_deterministic(population_gate):
    section, _ = population_gate
    fit, val = _clusters(1), _clusters(2)
    again = fit_ood(fit["pediatric_chest"], val["pediatric_chest"], components=8,
                    outside={k: v for k, v in fit.items() if k != "pediatric_chest"})
    assert again == section and len(section["sha256"]) == 64


def test_population_head_names_the_kind_of_mismatch(population_gate):
    _, detector = population_gate
    fresh = _clusters(3, n=200)
    accepted = np.mean([detector.check(f, GRAY).in_distribution for f in fresh["pediatric_chest"]])
    assert accepted >= 0.97  # the thresholds sit at the 0.995 quantile of clean validation features, per detector
    for kind in ("other_body_part", "inverted"):
        verdicts = [detector.check(f, GRAY) for f in fresh[kind]]
        assert np.mean([v.reason == kind for v in verdicts]) >= 0.95, kind
    # Chest kinds are named only within CHEST_NAME_QUANTILE of their own examples' distance, else "unlike any X-ray"
    adult = [detector.check(f, GRAY).reason for f in fresh["adult_chest"]]
    assert set(adult) <= {"adult_chest", "unfamiliar_chest", "features"} and "adult_chest" in adult
    child = [detector.check(f, GRAY) for f in fresh["child_chest"]]
    assert {v.reason for v in child} <= {"unfamiliar_chest", "features"}  # another hospital's child: never adult
    assert "another hospital, age or machine" in next(v for v in child if v.reason == "unfamiliar_chest").summary
    adult = next(v for v in map(lambda f: detector.check(f, GRAY), fresh["adult_chest"]) if v.reason == "adult_chest")
    assert "adult chest X-ray" in adult.summary and "children aged 1–5" in adult.message
    assert adult.to_dict()["reason"] == "adult_chest" and adult.outside > 1


def test_a_gate_never_shown_other_childrens_xrays_names_no_one_adult():
    fit, val = _clusters(1), _clusters(2)
    section = fit_ood(fit["pediatric_chest"], val["pediatric_chest"], components=8, outside={"adult_chest": fit["adult_chest"]})
    detector = OodDetector(section)
    assert section["population"]["classes"] == ["pediatric_chest", "adult_chest"]  # binary head, softmax rows
    reasons = [detector.check(f, GRAY).reason for f in _clusters(3)["adult_chest"]]
    assert set(reasons) <= {"unfamiliar_chest", "features"} and "unfamiliar_chest" in reasons


def test_unknown_population_class_is_refused():
    fit = _clusters(1)
    with pytest.raises(ValueError, match="unknown population classes"):
        fit_ood(fit["pediatric_chest"], fit["pediatric_chest"], components=8, outside={"toddlers": fit["adult_chest"]})


def test_a_tampered_gate_is_refused_at_load(tiny_model, tmp_path):
    import shutil

    from model.artifact import ArtifactError, read_verified_metadata

    for suffix in (".keras", ".json", ".tflite"):
        shutil.copy(tiny_model.with_suffix(suffix), tmp_path / tiny_model.with_suffix(suffix).name)
    copy = tmp_path / tiny_model.name
    meta = json.loads(copy.with_suffix(".json").read_text())
    assert read_verified_metadata(copy).ood["sha256"] == meta["ood"]["sha256"]  # sealed when fitted
    meta["ood"]["threshold"] *= 10  # loosen the gate by hand
    copy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="ood gate checksum mismatch"):
        read_verified_metadata(copy)


def test_a_kind_is_named_only_as_near_as_its_own_examples(population_gate):
    section, detector = population_gate
    assert set(section["population"]["kind_distance_limits"]) == {"child_chest", "adult_chest", "other_body_part", "inverted"}
    far = _clusters(4, n=1)["adult_chest"][0]
    far[:4] += 30.0  # further along the adult axes than any adult example was: not a kind the gate has seen
    verdict = detector.check(far, GRAY)
    assert verdict.likely == "adult_chest" and verdict.outside > 1 and verdict.reason == "features"
