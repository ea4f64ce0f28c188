"""Training package: patient split, metrics against hand-checked values, tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import data as data_lib
from training import metrics as m


@pytest.mark.parametrize("name, patient", [
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0381-0002.jpeg", "NORMAL2-IM-0381"),
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person23_virus_54.jpeg", "person23"),
    ("odd-name.png", "odd-name"),
])
def test_patient_id(name, patient):
    assert data_lib.patient_id(name) == patient


def _examples(n_patients=300, seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for p in range(n_patients):
        label = int(rng.random() < 0.74)
        for i in range(rng.integers(1, 4)):
            name = f"person{p}_bacteria_{i}.jpeg" if label else f"IM-{p:04d}-{i:04d}.jpeg"
            examples.append(data_lib.Example(Path(name), label, data_lib.patient_id(name)))
    return examples


def test_temporal_split_holds_out_the_latest_patients_of_each_batch():
    from training.split_probe import acquisition_batch, temporal_split

    examples = _examples() + [data_lib.Example(Path(f"NORMAL2-IM-{p:04d}-0001.jpeg"), 0, f"NORMAL2-IM-{p:04d}")
                              for p in range(40)]
    train, val = temporal_split(examples, 0.25)
    assert {e.patient for e in train}.isdisjoint({e.patient for e in val})
    assert acquisition_batch("NORMAL2-IM-0381") == "NORMAL2-IM-" and acquisition_batch("person12") == "person"
    held = {e.patient for e in val if e.patient.startswith("NORMAL2")}
    assert held == {f"NORMAL2-IM-{p:04d}" for p in range(30, 40)}
    for label in (0, 1):
        kept = [int(e.patient.split("-")[-1].replace("person", "")) for e in train
                if e.label == label and not e.patient.startswith("NORMAL2")]
        out = [int(e.patient.split("-")[-1].replace("person", "")) for e in val
               if e.label == label and not e.patient.startswith("NORMAL2")]
        assert out and max(kept) < min(out)


def test_split_keeps_patients_apart_and_is_stratified_and_seeded():
    examples = _examples()
    train, val = data_lib.patient_split(examples, 0.15, seed=42)
    assert {e.patient for e in train}.isdisjoint({e.patient for e in val})
    assert len(train) + len(val) == len(examples)
    assert 0.10 < len(val) / len(examples) < 0.20
    overall = np.mean([e.label for e in examples])
    assert abs(np.mean([e.label for e in val]) - overall) < 0.06
    again, _ = data_lib.patient_split(examples, 0.15, seed=42)
    assert [e.path for e in again] == [e.path for e in train]


def test_classification_metrics_hand_checked():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7, 0.55])
    # threshold 0.5: TN=2 (0.1, 0.3), FP=1 (0.6), FN=1 (0.4), TP=4
    result = m.classification_metrics(labels, probs, 0.5)
    assert result["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 4}
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["sensitivity"] == pytest.approx(4 / 5)
    assert result["specificity"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(4 / 5)
    assert result["f1"] == pytest.approx(0.8)
    # AUC: of 15 (pos, neg) pairs, positives 0.4 and 0.55 each lose to negative 0.6 -> 13/15
    assert m.ranking_metrics(labels, probs)["roc_auc"] == pytest.approx(13 / 15)


def test_ece_hand_checked():
    labels = np.array([1, 0, 1, 1])
    probs = np.array([0.95, 0.95, 0.05, 0.05])
    # two bins, each: predicted 0.95 vs observed 0.5 and 0.05 vs 1.0 -> 0.5*0.45 + 0.5*0.95
    assert m.expected_calibration_error(labels, probs) == pytest.approx(0.7)


def test_thresholds_on_separable_validation_sit_in_the_gap():
    labels = np.array([0] * 50 + [1] * 50)
    probs = np.concatenate([np.linspace(0.01, 0.2, 50), np.linspace(0.8, 0.99, 50)])
    balanced = m.balanced_threshold(labels, probs)
    assert 0.2 < balanced["value"] < 0.8 and balanced["value"] == pytest.approx(0.5, abs=0.02)
    assert balanced["sensitivity"] == 1.0 and balanced["specificity"] == 1.0
    screening = m.sensitivity_threshold(labels, probs, 0.97)
    assert screening["sensitivity"] >= 0.97
    assert screening["value"] == pytest.approx(probs[50 + 1], abs=1e-3)  # one miss allowed of 50 (3 decimals)
    confirmatory = m.specificity_threshold(labels, probs, 0.97)
    assert confirmatory["specificity"] >= 0.97 and confirmatory["value"] <= probs[48] + 1e-3  # one false alarm allowed


def test_presets_are_named_by_what_they_do_and_kept_in_threshold_order():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 300 + [1] * 300)
    probs = np.concatenate([rng.beta(2, 5, 300), rng.beta(5, 2, 300)])  # overlapping classes
    presets = m.ordered_presets(labels, probs)
    values = [presets[name]["value"] for name in ("screening", "balanced", "confirmatory")]
    assert presets["default"] == "balanced" and values == sorted(values) and values[0] < values[2]
    assert presets["screening"]["sensitivity"] >= 0.99 and presets["confirmatory"]["specificity"] >= 0.97
    separable = np.concatenate([np.linspace(0.01, 0.2, 300), np.linspace(0.8, 0.99, 300)])
    clamped = m.ordered_presets(labels, separable)  # screening's rule alone would sit above Youden's midpoint
    assert clamped["screening"]["value"] <= clamped["balanced"]["value"] <= clamped["confirmatory"]["value"]


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    assert m.fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.15)


def test_operating_points_are_monotone():
    labels = np.array([0, 0, 1, 1, 1])
    points = m.operating_points(labels, np.array([0.1, 0.4, 0.35, 0.8, 0.9]))
    sens = [p["sensitivity"] for p in points]
    assert len(points) == 99 and sens == sorted(sens, reverse=True)


def test_tiny_end_to_end_train_and_evaluate(tiny_model, tiny_dataset, tmp_path):
    from model.artifact import read_verified_metadata
    from training.evaluate import evaluate

    meta = read_verified_metadata(tiny_model)
    train_patients = meta.dataset["train"]["patients"]
    assert train_patients > 0 and meta.dataset["validation"]["images"] > 0
    assert len(meta.operating_points) == 99
    out = tmp_path / "eval" / "test.json"
    report = evaluate(str(tiny_model), str(tiny_dataset), str(out), plots=True, record=False)
    assert json.loads(out.read_text())["ranking"]["roc_auc"] == report["ranking"]["roc_auc"]
    assert report["dataset"]["images"] == 32
    for name in ("test_roc.png", "test_pr.png", "test_confusion.png", "test_reliability.png",
                 "training_history.png", "test_heatmap_samples.png"):
        assert (out.parent / name).stat().st_size > 1000


def test_search_ranks_trials_on_validation(tiny_dataset, tmp_path):
    from training.search import search
    from training.train import TrainConfig

    base = TrainConfig(data=str(tiny_dataset), out=str(tmp_path), weights="none", input_size=64, batch_size=8,
                       stage1_epochs=1, stage2_epochs=1, val_fraction=0.25, seed=3)
    results = search(base, {"dropout": [0.1, 0.5]})
    assert [r["dropout"] for r in sorted(results, key=lambda r: r["trial"])] == [0.1, 0.5]
    assert results[0]["val_brier"] <= results[1]["val_brier"]
    assert json.loads((tmp_path / "search.json").read_text()) == results


def test_stress_set_is_deterministic_and_leaves_the_clean_images_untouched():
    from training.stress import RENDERS_PER_IMAGE, stress_set

    rng = np.random.default_rng(0)
    images = rng.random((3, 64, 64, 1)).astype(np.float32)
    before = images.copy()
    first, labels = stress_set(images, np.array([0, 1, 1]))
    again, _ = stress_set(images, np.array([0, 1, 1]))
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3 * RENDERS_PER_IMAGE, 64, 64, 1) and list(labels) == [0] * 4 + [1] * 8
    assert first.min() >= 0 and first.max() <= 1
    assert not np.allclose(first[0], images[0]) and not np.allclose(first[0], first[1])  # each render differs
    alone, _ = stress_set(images[1:2], np.array([1]))
    assert not np.array_equal(alone, first[4:8])  # seeded per position: a reordered split is another stress set


def test_selection_rule_prefers_a_single_network_among_ties():
    from training.select import choose

    def row(name, auc, loss, networks=1):
        return {"name": name, "stress_roc_auc": auc, "stress_log_loss": loss, "networks": networks}

    rows = [row("a", 0.950, 0.30), row("ensemble", 0.961, 0.20, 3), row("soup", 0.960, 0.25), row("v1", 0.940, 0.4)]
    assert choose(rows, "v1") == "soup"  # within 0.002 of the best, one network
    rows[1]["stress_roc_auc"] = 0.970
    assert choose(rows, "v1") == "soup"  # an ensemble that wins outright cannot be served: best single network
    assert choose([row("a", 0.93, 0.3), row("v1", 0.94, 0.3)], "v1") == "v1"  # v2 must beat the reference


def test_soup_of_members_round_trips_with_float16_export(tiny_model, tiny_dataset, tmp_path):
    """Two tiny members on one split -> the selection writes a soup (or member) artifact that verifies and serves."""
    import shutil

    from model.artifact import read_verified_metadata
    from model.predictor import Predictor
    from training.select import select

    second = tmp_path / "member2"
    second.mkdir()
    for suffix in (".keras", ".json", ".tflite", ".history.json"):
        shutil.copy(tiny_model.with_suffix(suffix), second / tiny_model.with_suffix(suffix).name)
    report = select([str(tiny_model), str(second / tiny_model.name)], str(tiny_dataset), str(tmp_path / "chosen"))
    assert {r["name"] for r in report["candidates"]} >= {"soup", "ensemble"}
    chosen = tmp_path / "chosen" / tiny_model.name
    if report["chosen"] == "soup":
        meta = read_verified_metadata(chosen)
        assert len(meta.training["soup_of"]) == 2 and meta.metrics.stress_validation is not None
        soup_size, member_size = chosen.with_suffix(".tflite").stat().st_size, tiny_model.with_suffix(".tflite").stat().st_size
        assert soup_size < 0.75 * member_size  # float16 weights
        from model.artifact import load_model
        from model.forward_pass import LiteRtForward, keras_forward

        images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
        keras_model, _ = load_model(chosen)
        served, reference = LiteRtForward(chosen.with_suffix(".tflite"))(images), keras_forward(keras_model, meta.network)(images)
        np.testing.assert_allclose(served.logits, reference.logits, atol=1e-4)  # float16 storage, same numbers
    predictor = Predictor.load(chosen)
    assert predictor.predict(np.zeros((1, 64, 64, 3), np.float32)).probabilities.shape == (1,)


def test_a_reference_that_stays_is_written_out_with_the_rounds_thresholds(tiny_model, tiny_dataset, tmp_path):
    """A member no better than the shipped model: the shipped model stays, re-stamped, thresholds refitted."""
    import json
    import shutil

    from model.artifact import read_verified_metadata
    from training.select import select

    member = tmp_path / "member"
    member.mkdir()
    for suffix in (".keras", ".json", ".tflite", ".history.json"):
        shutil.copy(tiny_model.with_suffix(suffix), member / tiny_model.with_suffix(suffix).name)
    stale = json.loads(tiny_model.with_suffix(".json").read_text())
    stale["thresholds"]["sensitive"] = dict(stale["thresholds"]["confirmatory"])
    stale["thresholds"]["default"] = "sensitive"  # as v2.2 shipped, with the preset v3 retired
    reference = tmp_path / "shipped"
    shutil.copytree(member, reference)
    reference.joinpath(tiny_model.with_suffix(".json").name).write_text(json.dumps(stale))
    report = select([str(member / tiny_model.name)], str(tiny_dataset), str(tmp_path / "chosen"),
                    reference=str(reference / tiny_model.name), version="9")
    assert report["chosen"] == report["reference_name"] == "v1 (reference)"  # a tie does not beat the reference
    meta = read_verified_metadata(tmp_path / "chosen" / tiny_model.name)
    assert meta.model_version == "9" and "reference" in meta.selected_as
    assert meta.thresholds.default == "balanced" and meta.metrics.test is None
    assert list(meta.thresholds.values()) == ["screening", "balanced", "confirmatory"]  # refitted under the v3 rules


def test_augmentation_is_seeded_bounded_and_leaves_the_input_alone():
    from training.pipeline import Geometry, augment_batch

    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    before = images.copy()
    geometry = Geometry(0.055, 0.1, 0.15, 0.3)
    first = augment_batch(images, np.random.default_rng(5), geometry)
    again = augment_batch(images, np.random.default_rng(5), geometry)
    assert np.array_equal(first, again) and np.array_equal(images, before)
    assert first.shape == images.shape and first.dtype == np.float32 and 0.0 <= first.min() and first.max() <= 1.0
    assert not np.allclose(first, images)


def test_batches_are_seeded_per_epoch_and_batch_whatever_the_fetch_order():
    from training.pipeline import Batches

    images = np.random.default_rng(1).random((10, 16, 16, 1), dtype=np.float32)
    labels = np.array([0, 1] * 5)
    batches = Batches(images, labels, 4, training=True, seed=7, class_weights={0: 2.0, 1: 0.5}, mixup_alpha=0.4)
    last, first = batches[2], batches[0]  # fetched out of order, as worker threads may
    assert len(batches) == 3 and last[0].shape == (2, 16, 16, 3) and first[1].shape == (4, 1)
    assert np.array_equal(batches[0][0], first[0]) and np.array_equal(batches[2][2], last[2])
    assert np.all((first[2] >= 0.5) & (first[2] <= 2.0))  # mixed up class weights stay between the two
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][0], first[0])  # the next epoch reshuffles and re-augments
    plain = Batches(images, labels, 4, training=False)
    x, y, w = plain[0]
    assert np.array_equal(x[..., 2], images[:4, ..., 0]) and y.ravel().tolist() == [0, 1, 0, 1] and np.all(w == 1)


def test_a_fit_left_by_another_backend_is_finished_here_and_only_with_its_settings(tiny_dataset, tmp_path, monkeypatch):
    """The accelerator path: fit on a non-TensorFlow backend stops after the fit; the same command on TensorFlow
    writes the artifact from that fit; other settings are refused rather than mixed."""
    import dataclasses

    import keras

    from model.artifact import read_verified_metadata
    from training import train as train_lib

    config = train_lib.TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "m"), weights="none", input_size=64,
                                   batch_size=8, stage1_epochs=0, stage2_epochs=1, unfreeze_blocks="all",
                                   val_fraction=0.25, seed=5)
    with monkeypatch.context() as patch:
        patch.setattr(keras.backend, "backend", lambda: "torch")
        patch.setattr(train_lib, "accelerator", lambda: "test accelerator")
        fitted = train_lib.train(config)
    assert fitted.name == train_lib.FIT_WEIGHTS and not (tmp_path / "m" / "pneumonia_efficientnet_lite0.keras").exists()
    with pytest.raises(ValueError, match="other settings: dropout"):
        train_lib.train(dataclasses.replace(config, dropout=0.5))
    meta = read_verified_metadata(train_lib.train(config))
    assert meta.training["backend"] == "torch" and meta.training["accelerator"] == "test accelerator"
    assert not fitted.exists() and not (tmp_path / "m" / train_lib.FIT_RECORD).exists()


def test_agreement_refuses_files_other_than_those_the_selection_scored(tmp_path):
    """Once the choice ships, the shipped path holds the new model, not the round's reference: rescoring it as
    the reference would report the new model twice."""
    from model.artifact import sha256_file
    from training.select import _check_same_files

    member, shipped, kept = (tmp_path / name for name in ("member.keras", "shipped.keras", "kept.keras"))
    member.write_bytes(b"member")
    shipped.write_bytes(b"v2.3")
    kept.write_bytes(b"v2.3")
    report = {"members": [str(member)], "reference": str(shipped),
              "sha256": {str(member): sha256_file(member), str(shipped): sha256_file(shipped)}}
    _check_same_files(report, str(kept))  # the reference, moved: accepted
    shipped.write_bytes(b"v3")
    with pytest.raises(ValueError, match="not the file the selection scored"):
        _check_same_files(report, str(shipped))
