"""The model artifact: a ``.keras`` file, its LiteRT export, and ONE metadata JSON that describes both.

The metadata is the single place for every fact downstream code needs: class
names, input size, preprocessing parameters, backbone and Grad-CAM layer,
calibration, thresholds and how they were chosen, validation operating points,
headline metrics, split seed, dataset fingerprint and the SHA-256 of the
``.keras`` file and of its ``.tflite`` export (the same network for the small
LiteRT interpreter the app runs). Loading verifies schema and checksums before
any engine sees a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SCHEMA_VERSION = 1
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_MODEL = SHIPPED_DIR / "pneumonia_efficientnet_lite0.keras"

# key -> type(s) every metadata file must have
REQUIRED_FIELDS = {
    "schema_version": int,
    "model_name": str,
    "created": str,
    "backbone": str,
    "class_names": list,
    "input_size": int,
    "preprocessing": dict,
    "cam_layer": str,
    "logit_layer": str,
    "calibration": dict,
    "thresholds": dict,
    "operating_points": list,
    "metrics": dict,
    "training": dict,
    "dataset": dict,
    "model_file": str,
    "sha256": str,
}


class ArtifactError(RuntimeError):
    """A model artifact that is missing, tampered with or malformed; the message says which."""


class NoTrainedModelError(ArtifactError):
    """No trained model is present where one was expected."""


def metadata_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def history_path(model_path: str | os.PathLike) -> Path:
    """Where training writes the per-epoch history of ``model_path``."""
    return Path(model_path).with_suffix(".history.json")


def litert_path(model_path: str | os.PathLike) -> Path:
    """Where the LiteRT export of ``model_path`` lives."""
    return Path(model_path).with_suffix(".tflite")


def litert_entry(model_path: str | os.PathLike) -> dict:
    """The metadata ``runtime`` entry for the LiteRT export written beside ``model_path``."""
    path = litert_path(model_path)
    return {"engine": "litert", "file": path.name, "sha256": sha256_file(path)}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_metadata(meta: dict) -> None:
    """Raise :class:`ArtifactError` listing every schema problem in ``meta``."""
    if not isinstance(meta, dict):
        raise ArtifactError("model metadata must be a JSON object")
    problems = []
    for key, kind in REQUIRED_FIELDS.items():
        if key not in meta:
            problems.append(f"missing field '{key}'")
        elif not isinstance(meta[key], kind) or (kind is int and isinstance(meta[key], bool)):
            problems.append(f"field '{key}' should be {kind.__name__}")
    if not problems:
        if meta["schema_version"] != SCHEMA_VERSION:
            problems.append(f"schema version {meta['schema_version']} is not supported (expected {SCHEMA_VERSION})")
        if tuple(meta["class_names"]) != CLASS_NAMES:
            problems.append(f"class_names must be {list(CLASS_NAMES)}")
        thresholds = meta["thresholds"]
        default = thresholds.get("default")
        if default not in thresholds or not isinstance(thresholds.get(default), dict):
            problems.append("thresholds.default must name one of the thresholds")
        else:
            for name, entry in thresholds.items():
                if name != "default" and not 0.0 < float(entry.get("value", -1)) < 1.0:
                    problems.append(f"threshold '{name}' must have a value in (0, 1)")
        if float(meta["calibration"].get("temperature", 0)) <= 0:
            problems.append("calibration.temperature must be positive")
        runtime = meta.get("runtime")
        if runtime is not None and not (isinstance(runtime, dict) and all(isinstance(runtime.get(k), str) for k in ("file", "sha256"))):
            problems.append("runtime must name the LiteRT file and its sha256")
    if problems:
        raise ArtifactError("invalid model metadata: " + "; ".join(problems))


def save_metadata(model_path: str | os.PathLike, meta: dict) -> Path:
    """Stamp ``meta`` with the model file's name and checksum, validate it, write it beside the model."""
    model_path = Path(model_path)
    meta = dict(meta, schema_version=SCHEMA_VERSION, class_names=list(CLASS_NAMES),
                model_file=model_path.name, sha256=sha256_file(model_path))
    validate_metadata(meta)
    path = metadata_path(model_path)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_verified_metadata(model_path: str | os.PathLike) -> dict:
    """Metadata of ``model_path`` after checking that it exists, is valid and matches the file's SHA-256."""
    model_path = Path(model_path)
    if model_path.suffix == ".json":
        model_path = model_path.with_suffix(".keras")
    if not model_path.exists():
        if model_path == SHIPPED_MODEL:
            raise NoTrainedModelError(
                "No trained model is present (expected model/shipped/pneumonia_efficientnet_lite0.keras). "
                "Train one with 'python -m training train' or pass --model."
            )
        raise ArtifactError(f"model file not found: {model_path}")
    meta_path = metadata_path(model_path)
    if not meta_path.exists():
        raise ArtifactError(f"model metadata not found: {meta_path} (every model needs its JSON beside it)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model metadata {meta_path.name} is not valid JSON: {exc}") from None
    validate_metadata(meta)
    if meta["model_file"] != model_path.name:
        raise ArtifactError(f"metadata {meta_path.name} describes {meta['model_file']}, not {model_path.name}")
    actual = sha256_file(model_path)
    if actual != meta["sha256"]:
        raise ArtifactError(
            f"checksum mismatch for {model_path.name}: the file has been modified or does not belong "
            f"to its metadata (expected {meta['sha256'][:12]}…, got {actual[:12]}…). Refusing to load it."
        )
    return meta


def verified_litert_path(model_path: str | os.PathLike, meta: dict) -> Path:
    """The LiteRT export named in ``meta``, after checking it exists and matches its SHA-256."""
    entry = meta.get("runtime")
    if entry is None:
        raise ArtifactError(f"{Path(model_path).name} has no LiteRT export; "
                            "run 'python -m training export --model PATH' once to write it")
    path = Path(model_path).with_name(entry["file"])
    if not path.exists():
        raise ArtifactError(f"LiteRT model file not found: {path}")
    if sha256_file(path) != entry["sha256"]:
        raise ArtifactError(f"checksum mismatch for {path.name}: the file has been modified or does not belong "
                            "to its metadata. Refusing to load it.")
    return path


def load_model(model_path: str | os.PathLike = SHIPPED_MODEL):
    """(keras model, metadata) after checksum and schema verification."""
    meta = read_verified_metadata(model_path)
    import keras

    model = keras.models.load_model(Path(model_path).with_suffix(".keras"), compile=False)
    return model, meta
