"""The population gate end to end: counter-examples from a folder, refit, reasons from the shipped model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_xray
from PIL import Image

SAMPLES = Path(__file__).resolve().parent / "samples"


def _write_source(root: Path, name: str, rows: list[dict], images: list[np.ndarray]) -> None:
    folder = root / name
    (folder / "img").mkdir(parents=True)
    for row, pixels in zip(rows, images):
        Image.fromarray(pixels).save(folder / row["file"], quality=92)
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def outside_folder(tmp_path_factory) -> Path:
    """Two generated sources in the external layout: 'adults' (with two children) and 'bones' (another body part)."""
    root = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(0)
    adults = [np.clip(synthetic_xray(200 + i, size=(120, 100)).astype(int) // 2 + 100, 0, 255).astype(np.uint8)
              for i in range(12)]
    _write_source(root, "adults", [{"file": f"img/a{i}.jpeg", "label": "NORMAL" if i % 2 else "PNEUMONIA",
                                    "patient_age": str(40 + i if i > 1 else 9)} for i in range(12)], adults)
    bones = []
    for _ in range(10):
        image = rng.normal(40, 8, (96, 96))
        image[:, 35:60] += 150  # one long bright bone
        bones.append(np.clip(image, 0, 255).astype(np.uint8))
    _write_source(root, "bones", [{"file": f"img/b{i}.jpeg", "body_part": "femur"} for i in range(10)], bones)
    return root


def test_outside_sources_are_listed_by_kind_and_children_are_their_own_kind(outside_folder):
    from training.outside import list_outside

    images = list_outside(outside_folder)
    assert len(images) == 22 and {i.source for i in images} == {"adults", "bones"}
    assert {i.kind for i in images if i.source == "bones"} == {"other_body_part"}
    children = [i for i in images if i.kind == "child_chest"]
    assert len(children) == 2 and {c.group for c in children} == {"child aged 6-17"}
    assert all(i.age >= 18 for i in images if i.kind == "adult_chest")


def test_refit_with_counter_examples_writes_a_sealed_population_head(tiny_model, tiny_dataset, outside_folder, tmp_path):
    from model.artifact import read_verified_metadata
    from model.ood import OodDetector
    from training.train import refit

    for suffix in (".keras", ".json", ".tflite", ".history.json"):
        shutil.copy(tiny_model.with_suffix(suffix), tmp_path / tiny_model.with_suffix(suffix).name)
    copy = tmp_path / tiny_model.name
    meta = refit(copy, str(tiny_dataset), str(outside_folder), version="7")
    population = meta.ood["population"]
    assert population["classes"] == ["pediatric_chest", "child_chest", "adult_chest", "other_body_part", "inverted"]
    assert population["counts"]["adult_chest"] == 10 and population["counts"]["other_body_part"] == 10
    assert population["counts"]["child_chest"] == 2  # children of another hospital: never taught as adults
    assert meta.ood["feature_source"] == {"layer": meta.feature_layer, "pooling": "mean"}
    assert "clean validation" in population["threshold_rule"] and meta.model_version == "7"
    assert read_verified_metadata(copy).ood == meta.ood  # written, sealed, verified
    OodDetector(meta.ood)  # loads for serving
    again = json.loads(copy.with_suffix(".json").read_text())["ood"]
    refit(copy, str(tiny_dataset), str(outside_folder), version="7")
    assert json.loads(copy.with_suffix(".json").read_text())["ood"] == again  # deterministic refit


# --- The shipped model's gate on real X-rays from outside its population (committed samples, credited).

ADULTS = sorted(SAMPLES.glob("adult_*.jpeg"))


def test_the_shipped_gate_flags_adult_chest_xrays_in_the_cli_line(capsys):
    from model.__main__ import main

    assert len(ADULTS) == 2
    assert main(["predict", *map(str, ADULTS)]) == 0
    for line in map(json.loads, capsys.readouterr().out.splitlines()):
        # "adult" only with strong evidence; otherwise words that are true of anyone not in the population
        assert line["reason"] in ("adult_chest", "unfamiliar_chest", "features"), line
        assert line["trust"] == "outside" and line["reliable"] is False, line


def test_an_inverted_xray_is_flagged_or_scored_like_the_original(sample_files):
    import io

    from PIL import ImageOps

    from model.predictor import Predictor
    from model.service import analyze_bytes

    predictor = Predictor.load()
    for path in sample_files:
        original = analyze_bytes(predictor, path.read_bytes()).prediction
        buffer = io.BytesIO()
        ImageOps.invert(Image.open(path).convert("L")).save(buffer, "PNG")
        inverted = analyze_bytes(predictor, buffer.getvalue()).prediction
        assert inverted.ood.reason == "inverted" or abs(inverted.probability - original.probability) < 0.1, path.name


def test_the_shipped_samples_of_the_population_pass_the_gate(sample_files):
    from model.predictor import Predictor
    from model.service import analyze_bytes

    predictor = Predictor.load()
    verdicts = {p.name: analyze_bytes(predictor, p.read_bytes()).prediction.ood for p in sample_files}
    # Gate II (issue 28) flags one of the six test-split samples as unlike its training X-rays (1.3 % of the test
    # split is flagged); said in the README. None is named an adult or another body part.
    assert sum(v.in_distribution for v in verdicts.values()) >= len(verdicts) - 1, {k: v.reason for k, v in verdicts.items()}
    assert {v.reason for v in verdicts.values()} <= {None, "unfamiliar_chest"}


def test_presets_are_in_threshold_order_and_screening_is_the_most_sensitive_on_test():
    from model.artifact import SHIPPED_MODEL, read_verified_metadata
    from model.operating_point import operating_point

    meta = read_verified_metadata(SHIPPED_MODEL)
    presets = meta.thresholds.values()
    assert list(presets) == ["screening", "balanced", "confirmatory"] and meta.thresholds.default == "balanced"
    assert list(presets.values()) == sorted(presets.values())
    points = [operating_point(meta, value, 0.2) for value in presets.values()]
    assert all(p.held_out for p in points)  # the readout is the official test split's
    sensitivities = [p.sensitivity for p in points]
    specificities = [p.specificity for p in points]
    assert sensitivities == sorted(sensitivities, reverse=True) and specificities == sorted(specificities)


def test_the_app_names_the_mismatch_and_withholds_the_probability():
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.run()
    at.file_uploader(key="uploads").set_value([(ADULTS[0].name, ADULTS[0].read_bytes(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    shown = " ".join(str(e.value) for e in list(at.warning) + list(at.markdown) + list(at.error))
    assert "unlike the X-rays this model was trained on (another hospital, age or machine)" in shown
    assert not any(m.label.startswith("Pneumonia probability") for m in at.metric)  # withheld unless asked


def test_the_model_card_describes_the_shipped_model_and_its_gate():
    from model.artifact import SHIPPED_MODEL, read_verified_metadata

    meta = read_verified_metadata(SHIPPED_MODEL)
    card = (Path(__file__).resolve().parents[1] / "model" / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: {meta.model_name}, version {meta.model_version}\n")
    assert "## Who this model is for, and what the gate refuses" in card
    for name, value in meta.thresholds.values().items():
        assert f"| {name}" in card and f"{value:.3f}" in card


# --- Issue 28: names only where the evidence supports them.

def _variants(path: Path):
    """A committed child's X-ray as uploaded from elsewhere: as is, darker, lighter, lower contrast, smaller."""
    import io

    gray = np.asarray(Image.open(path).convert("L"), np.float64) / 255.0
    small = Image.fromarray((gray * 255).astype(np.uint8)).resize((gray.shape[1] // 3, gray.shape[0] // 3))
    for pixels in (gray, gray ** 1.6, gray ** 0.6, 0.25 + 0.5 * gray, np.asarray(small, np.float64) / 255.0):
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8)).save(buffer, "PNG")
        yield buffer.getvalue()


def test_a_childs_xray_from_the_samples_is_never_named_an_adult(sample_files):
    from model.predictor import Predictor
    from model.service import analyze_bytes

    predictor = Predictor.load()
    for path in sample_files:
        for blob in _variants(path):
            verdict = analyze_bytes(predictor, blob).prediction.ood
            assert "adult_chest" not in verdict.reasons, (path.name, verdict.to_dict())


def test_a_generated_non_chest_image_is_never_named_a_chest_xray():
    from model.ood import CHEST_KINDS
    from model.predictor import Predictor
    from training.ood_eval import non_xray_corpus, served_prediction

    predictor = Predictor.load()
    chest_names = {*CHEST_KINDS, "unfamiliar_chest"}
    rng = np.random.default_rng(3)
    bones = []  # a long bright bone on soft tissue: an X-ray of no chest
    for _ in range(5):
        image = rng.normal(50, 10, (300, 240))
        image[:, 90:150] += 150
        bones.append(("bone", _png(np.clip(image, 0, 255).astype(np.uint8))))
    for name, blob in non_xray_corpus()[::3] + bones:
        prediction = served_prediction(predictor, blob)
        if prediction is None:  # unreadable: never diagnosed
            continue
        assert not prediction.ood.in_distribution, name
        assert not chest_names & set(prediction.ood.reasons), (name, prediction.ood.to_dict())


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_shipped_gate_names_its_feature_source():
    from model.artifact import SHIPPED_MODEL, read_verified_metadata
    from model.predictor import Predictor

    meta = read_verified_metadata(SHIPPED_MODEL)
    source = meta.ood["feature_source"]
    assert source == {"layer": meta.feature_layer, "pooling": "mean"}
    assert Predictor.load().ood.feature_source == source
    assert "child_chest" in meta.ood["population"]["classes"]
