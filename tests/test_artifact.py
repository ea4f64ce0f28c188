"""Artifact metadata: round trip, schema errors, checksum tamper detection, missing model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.artifact import (
    SHIPPED_MODEL,
    ArtifactError,
    ModelMetadata,
    NoTrainedModelError,
    litert_path,
    load_model,
    read_verified_metadata,
    validate_metadata,
)
from model.predictor import Predictor


def _copy(tiny_model, tmp_path):
    target = tmp_path / tiny_model.name
    shutil.copy(tiny_model, target)
    shutil.copy(tiny_model.with_suffix(".json"), target.with_suffix(".json"))
    shutil.copy(litert_path(tiny_model), litert_path(target))
    return target


def test_round_trip_loads_verified_model(tiny_model):
    model, meta = load_model(tiny_model)
    assert meta.input_size == 64 and meta.backbone == "efficientnet_lite0"
    assert model.get_layer(meta.cam_layer) is not None and model.get_layer(meta.feature_layer) is not None
    assert meta.thresholds.default in meta.thresholds.named
    assert read_verified_metadata(tiny_model).to_dict() == json.loads(tiny_model.with_suffix(".json").read_text())


def test_tampered_model_is_refused(tiny_model, tmp_path):
    path = _copy(tiny_model, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        read_verified_metadata(path)


def test_training_writes_a_verified_litert_export(tiny_model):
    meta = read_verified_metadata(tiny_model)
    assert meta.runtime.engine == "litert" and meta.runtime.file == litert_path(tiny_model).name
    predictor = Predictor.load(tiny_model)
    assert predictor.predict(np.zeros((2, 64, 64, 3), np.float32)).probabilities.shape == (2,)
    empty = predictor.predict(np.zeros((0, 64, 64, 3), np.float32))  # an empty batch, as the Keras engine answers it
    assert empty.probabilities.shape == (0,) and empty.features.shape[0] == 0


def test_tampered_litert_export_is_refused(tiny_model, tmp_path):
    path = _copy(tiny_model, tmp_path)
    data = bytearray(litert_path(path).read_bytes())
    data[-100] ^= 0xFF
    litert_path(path).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for .*tflite"):
        Predictor.load(path)


def test_model_without_export_says_how_to_make_one(tiny_model, tmp_path):
    path = _copy(tiny_model, tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["runtime"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="python -m training export"):
        Predictor.load(path)


def test_metadata_for_another_file_is_refused(tiny_model, tmp_path):
    path = _copy(tiny_model, tmp_path)
    renamed = path.with_name("other.keras")
    path.rename(renamed)
    path.with_suffix(".json").rename(renamed.with_suffix(".json"))
    with pytest.raises(ArtifactError, match="describes"):
        read_verified_metadata(renamed)


def test_missing_metadata_is_refused(tiny_model, tmp_path):
    path = _copy(tiny_model, tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ArtifactError, match="metadata not found"):
        read_verified_metadata(path)


def test_schema_errors_are_listed(tiny_model):
    meta = json.loads(tiny_model.with_suffix(".json").read_text())
    del meta["cam_layer"]
    meta["schema_version"] = 99
    meta["input_size"] = "224"
    with pytest.raises(ArtifactError) as excinfo:
        validate_metadata(meta)
    for problem in ("missing field 'cam_layer'", "field 'input_size' should be int"):
        assert problem in str(excinfo.value)
    meta = json.loads(tiny_model.with_suffix(".json").read_text())
    meta["thresholds"]["balanced"]["value"] = 1.5
    with pytest.raises(ArtifactError, match="threshold 'balanced'"):
        validate_metadata(meta)
    meta = json.loads(tiny_model.with_suffix(".json").read_text())
    meta["colour_scheme"] = "x"
    meta["calibration"]["bias"] = 0.0
    with pytest.raises(ArtifactError) as excinfo:
        ModelMetadata.from_dict(meta)
    assert "unknown field 'colour_scheme'" in str(excinfo.value) and "field 'calibration' has unknown entries" in str(excinfo.value)


def test_missing_shipped_model_says_so(monkeypatch, tmp_path):
    import model.artifact as artifact

    monkeypatch.setattr(artifact, "SHIPPED_MODEL", tmp_path / "absent.keras")
    with pytest.raises(NoTrainedModelError, match="No trained model is present"):
        artifact.read_verified_metadata(artifact.SHIPPED_MODEL)
    assert SHIPPED_MODEL.name.endswith(".keras")


def test_training_fits_the_heatmap_scale_and_older_metadata_without_it_still_loads(tiny_model, tmp_path):
    meta = read_verified_metadata(tiny_model)
    assert meta.cam_scale is not None and meta.cam_scale.percentile == 95.0
    assert set(meta.cam_scale.reference) <= {"NORMAL", "PNEUMONIA"} and meta.cam_scale.reference
    data = meta.to_dict()
    assert ModelMetadata.from_dict(data).cam_scale == meta.cam_scale  # round trip
    older = {k: v for k, v in data.items() if k != "cam_scale"}
    assert ModelMetadata.from_dict(older).cam_scale is None  # maps then scale per image, with a note
    broken = dict(data, cam_scale={"reference": {"PNEUMONIA": {"gradcam": -1.0}}, "percentile": 95.0, "images": {}})
    with pytest.raises(ArtifactError, match="cam_scale.reference"):
        validate_metadata(broken)
