"""The model artifact: a ``.keras`` file, its LiteRT export, and ONE metadata JSON that describes both.

The metadata is the single place for every fact downstream code needs: class
names, input size, preprocessing parameters, backbone and the network's layer
names, calibration, thresholds and how they were chosen, validation operating
points, headline metrics, split seed, dataset fingerprint and the SHA-256 of the
``.keras`` file and of its ``.tflite`` export (the same network for the small
LiteRT interpreter the app runs). Loading verifies schema and checksums before
any engine sees a file, and returns :class:`ModelMetadata`: frozen, typed, read
as attributes everywhere. Records that are reports rather than settings
(metrics, training configuration, dataset fingerprint, OOD fit) stay mappings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model.ood import seal_problem
from model.preprocessing import PreprocessConfig

SCHEMA_VERSION = 1
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
SANITY_CEILING = 0.5  # a heatmap whose ranking keeps more correlation than this once the head and top block are random fails
PRESETS_IN_ORDER = ("screening", "balanced", "confirmatory")  # lowest threshold first (training.metrics.ordered_presets)
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
    "feature_layer": str,
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
OPTIONAL_FIELDS = {"model_version": str, "runtime": dict, "ood": dict, "stress": dict, "selected_as": str,
                   "validation_prevalence": float, "cam_scale": dict, "explanation": dict}


@dataclass(frozen=True)
class Threshold:
    value: float  # P(PNEUMONIA) at or above which the call is PNEUMONIA
    rule: str  # how it was chosen, in words
    sensitivity: float | None = None  # where it was chosen
    specificity: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """The named thresholds of a model and which one is its default."""

    default: str
    named: Mapping[str, Threshold]

    @property
    def default_value(self) -> float:
        return self.named[self.default].value

    def values(self) -> dict[str, float]:
        """{"screening": 0.08, "balanced": 0.59, "confirmatory": 0.81}: the presets the app and CLI offer, in
        threshold order (lowest first), so a name never claims more sensitivity than a lower threshold gives."""
        rank = {name: i for i, name in enumerate(PRESETS_IN_ORDER)}  # ties (a clamped preset) keep the rules' order
        ordered = sorted(self.named, key=lambda name: (self.named[name].value, rank.get(name, len(rank)), name))
        return {name: self.named[name].value for name in ordered}

    def by_value(self) -> dict[float, list[str]]:
        """{0.156: ["screening"], 0.734: ["balanced", "confirmatory"]}: the presets grouped by threshold, in
        threshold order; a preset clamped to its neighbour shares that neighbour's threshold, so one choice."""
        groups: dict[float, list[str]] = {}
        for name, value in self.values().items():
            groups.setdefault(value, []).append(name)
        return groups

    @classmethod
    def from_dict(cls, data: Mapping) -> Thresholds:
        named = {name: Threshold(**entry) for name, entry in data.items() if name != "default"}
        return cls(data["default"], named)

    def to_dict(self) -> dict:
        return {"default": self.default, **{name: _drop_none(dataclasses.asdict(t)) for name, t in self.named.items()}}


@dataclass(frozen=True)
class Calibration:
    method: str
    temperature: float  # probability = sigmoid(logit / temperature)


@dataclass(frozen=True)
class ValidationPoint:
    """One row of the operating-point table measured where the thresholds were chosen."""

    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class Metrics:
    """Reports recorded for the model: each a mapping of figure name to value."""

    validation: Mapping
    stress_validation: Mapping | None = None
    test: Mapping | None = None  # written by ``python -m training evaluate --record``: reporting only

    def to_dict(self) -> dict:
        return _drop_none(dataclasses.asdict(self))

    def replace(self, **changes) -> Metrics:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LiteRtFile:
    file: str  # beside the .keras file
    sha256: str
    engine: str = "litert"


@dataclass(frozen=True)
class CamScale:
    """The fixed full scale of each CAM method's map, fitted with the model (:func:`model.explain.fit_cam_scale`).

    A map is shown as its raw values divided by the reference of its method and target class, so a weak map
    looks weak: the reference is a high percentile of the maps' peaks over the validation images of that class.
    """

    reference: Mapping[str, Mapping[str, float]]  # target class -> CAM method -> raw map value shown as full colour
    percentile: float  # which percentile of the peaks the reference is
    images: Mapping[str, Mapping[str, int]]  # target class -> CAM method -> validation images of that class used

    def value(self, method: str, target: str) -> float | None:
        """The reference for one method and target class; None when it was not fitted (or is not positive)."""
        value = self.reference.get(target, {}).get(method)
        return float(value) if value is not None and value > 0 else None


@dataclass(frozen=True)
class ExplanationChoice:
    """Which heatmap a visitor sees first, chosen per model by a written rule (:mod:`training.explanations`) on
    validation X-rays, with what was measured for every candidate and for the check's controls."""

    default: str  # the method shown first (a key of model.explain.CAM_METHODS)
    rule: str  # the rule, in words
    candidates: Mapping[str, Mapping]  # method -> supports (class -> share), sanity (step -> |rho|), extra_passes
    controls: Mapping[str, Mapping[str, float]]  # control map -> class -> share of "supports" through the same check
    images: Mapping[str, int]  # class -> validation X-rays measured (sanity on fewer: candidates' own record)

    def sanity(self, method: str) -> float | None:
        """Rank correlation left after the head and the top block are re-initialised (lower is better)."""
        value = self.candidates.get(method, {}).get("sanity", {}).get("head + top block")
        return None if value is None else float(value)

    def fails_sanity(self, method: str) -> bool:
        value = self.sanity(method)
        return value is not None and value > SANITY_CEILING


@dataclass(frozen=True)
class NetworkLayout:
    """What the forward pass (:mod:`model.forward_pass`) needs to know about a network."""

    input_size: int  # square input side, pixels
    feature_layer: str  # pooled features (the OOD gate's input)
    cam_layer: str  # Grad-CAM's layer
    logit_layer: str


@dataclass(frozen=True)
class ModelMetadata:
    """Everything known about one trained model; built from and written to its JSON."""

    model_name: str
    created: str
    backbone: str
    input_size: int
    preprocessing: PreprocessConfig
    feature_layer: str  # pooled features (the OOD gate's input)
    cam_layer: str  # Grad-CAM's layer
    logit_layer: str
    calibration: Calibration
    thresholds: Thresholds
    operating_points: tuple[ValidationPoint, ...]
    metrics: Metrics
    training: Mapping  # the training configuration, as run
    dataset: Mapping  # fingerprints of the train and validation splits, and how they were split
    model_file: str
    sha256: str
    model_version: str = "1"
    runtime: LiteRtFile | None = None
    ood: Mapping | None = None  # the fitted out-of-distribution gate (:mod:`model.ood`)
    stress: Mapping | None = None  # the stress validation the thresholds were fitted on
    selected_as: str | None = None
    validation_prevalence: float | None = None
    cam_scale: CamScale | None = None  # absent in metadata written before it existed: maps then scale per image
    explanation: ExplanationChoice | None = None  # absent before the rule existed: Grad-CAM is shown first
    class_names: tuple[str, ...] = CLASS_NAMES
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelMetadata:
        """Validate (every problem listed in one :class:`ArtifactError`), then build."""
        validate_metadata(data)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**dict(
            values,
            class_names=tuple(data["class_names"]),
            preprocessing=PreprocessConfig.from_dict(data["preprocessing"]),
            calibration=Calibration(**data["calibration"]),
            thresholds=Thresholds.from_dict(data["thresholds"]),
            operating_points=tuple(ValidationPoint(**p) for p in data["operating_points"]),
            metrics=Metrics(**data["metrics"]),
            runtime=LiteRtFile(**data["runtime"]) if data.get("runtime") else None,
            cam_scale=CamScale(**data["cam_scale"]) if data.get("cam_scale") else None,
            explanation=ExplanationChoice(**data["explanation"]) if data.get("explanation") else None,
        ))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(
            class_names=list(self.class_names),
            preprocessing=self.preprocessing.to_dict(),
            calibration=dataclasses.asdict(self.calibration),
            thresholds=self.thresholds.to_dict(),
            operating_points=[dataclasses.asdict(p) for p in self.operating_points],
            metrics=self.metrics.to_dict(),
            runtime=dataclasses.asdict(self.runtime) if self.runtime else None,
            cam_scale=_cam_scale_dict(self.cam_scale) if self.cam_scale else None,
            explanation=dataclasses.asdict(self.explanation) if self.explanation else None,
        )
        return _drop_none(out)

    @property
    def network(self) -> NetworkLayout:
        return NetworkLayout(self.input_size, self.feature_layer, self.cam_layer, self.logit_layer)

    def replace(self, **changes) -> ModelMetadata:
        return dataclasses.replace(self, **changes)


def _cam_scale_dict(scale: CamScale) -> dict:
    return {"reference": {t: dict(m) for t, m in scale.reference.items()}, "percentile": scale.percentile,
            "images": {t: dict(m) for t, m in scale.images.items()}}


def _drop_none(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v is not None}


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


def litert_entry(model_path: str | os.PathLike) -> LiteRtFile:
    """The metadata ``runtime`` entry for the LiteRT export written beside ``model_path``."""
    path = litert_path(model_path)
    return LiteRtFile(path.name, sha256_file(path))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_metadata(meta: Mapping) -> None:
    """Raise :class:`ArtifactError` listing every schema problem in ``meta`` (a metadata JSON object)."""
    if not isinstance(meta, Mapping):
        raise ArtifactError("model metadata must be a JSON object")
    problems = []
    for key, kind in (REQUIRED_FIELDS | OPTIONAL_FIELDS).items():
        if key not in meta:
            if key in REQUIRED_FIELDS:
                problems.append(f"missing field '{key}'")
        elif not isinstance(meta[key], kind) or (kind is int and isinstance(meta[key], bool)):
            problems.append(f"field '{key}' should be {kind.__name__}")
    if not problems:  # every field is there with its type: the values can be checked
        problems += _value_problems(meta)
    problems += [f"unknown field '{key}'" for key in meta if key not in REQUIRED_FIELDS | OPTIONAL_FIELDS]
    if problems:
        raise ArtifactError("invalid model metadata: " + "; ".join(problems))


def _value_problems(meta: Mapping) -> list[str]:
    problems = []
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
    if isinstance(meta.get("ood"), Mapping) and (problem := seal_problem(meta["ood"])):
        problems.append(problem)
    runtime = meta.get("runtime")
    if runtime is not None and not all(isinstance(runtime.get(k), str) for k in ("file", "sha256")):
        problems.append("runtime must name the LiteRT file and its sha256")
    if meta.get("cam_scale") is not None:
        problems += _cam_scale_problems(meta["cam_scale"])
    explanation = meta.get("explanation")
    if explanation is not None and (set(explanation) != {f.name for f in dataclasses.fields(ExplanationChoice)}
                                    or explanation.get("default") not in explanation.get("candidates", {})):
        problems.append("explanation must have exactly: default, rule, candidates, controls, images; "
                        "and its default must be one of its candidates")
    sections = {"preprocessing": PreprocessConfig, "calibration": Calibration, "runtime": LiteRtFile, "metrics": Metrics}
    for key, kind in sections.items():
        if key in meta and not set(meta[key]) <= {f.name for f in dataclasses.fields(kind)}:
            problems.append(f"field '{key}' has unknown entries")
    threshold_keys = {f.name for f in dataclasses.fields(Threshold)}
    if any(not set(entry) <= threshold_keys for name, entry in meta["thresholds"].items() if name != "default"):
        problems.append("field 'thresholds' has unknown entries")
    return problems


def _cam_scale_problems(scale: Mapping) -> list[str]:
    if set(scale) != {f.name for f in dataclasses.fields(CamScale)}:
        return ["cam_scale must have exactly: reference, percentile, images"]
    reference = scale["reference"]
    if not isinstance(reference, dict) or not all(
            target in CLASS_NAMES and isinstance(methods, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in methods.values())
            for target, methods in reference.items()):
        return ["cam_scale.reference must map class names to a positive number per CAM method"]
    return []


def save_metadata(model_path: str | os.PathLike, meta: ModelMetadata | Mapping) -> ModelMetadata:
    """Stamp ``meta`` with the model file's name and checksum, validate it, write it beside the model."""
    model_path = Path(model_path)
    data = meta.to_dict() if isinstance(meta, ModelMetadata) else _jsonable(meta)
    data = dict(data, schema_version=SCHEMA_VERSION, class_names=list(CLASS_NAMES),
                model_file=model_path.name, sha256=sha256_file(model_path))
    stamped = ModelMetadata.from_dict(data)
    metadata_path(model_path).write_text(json.dumps(stamped.to_dict(), indent=2, sort_keys=True) + "\n")
    return stamped


def _jsonable(meta: Mapping) -> dict:
    """A metadata mapping whose typed parts (thresholds, runtime entry, preprocessing) are plain JSON."""
    converters = {PreprocessConfig: PreprocessConfig.to_dict, LiteRtFile: dataclasses.asdict, NetworkLayout: dataclasses.asdict,
                  Calibration: dataclasses.asdict, Thresholds: Thresholds.to_dict, Metrics: Metrics.to_dict,
                  CamScale: _cam_scale_dict, ExplanationChoice: dataclasses.asdict}
    return {k: converters[type(v)](v) if type(v) in converters else v for k, v in meta.items()}


def read_verified_metadata(model_path: str | os.PathLike) -> ModelMetadata:
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
        meta = ModelMetadata.from_dict(json.loads(meta_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model metadata {meta_path.name} is not valid JSON: {exc}") from None
    if meta.model_file != model_path.name:
        raise ArtifactError(f"metadata {meta_path.name} describes {meta.model_file}, not {model_path.name}")
    actual = sha256_file(model_path)
    if actual != meta.sha256:
        raise ArtifactError(
            f"checksum mismatch for {model_path.name}: the file has been modified or does not belong "
            f"to its metadata (expected {meta.sha256[:12]}…, got {actual[:12]}…). Refusing to load it."
        )
    return meta


def verified_litert_path(model_path: str | os.PathLike, meta: ModelMetadata) -> Path:
    """The LiteRT export named in ``meta``, after checking it exists and matches its SHA-256."""
    if meta.runtime is None:
        raise ArtifactError(f"{Path(model_path).name} has no LiteRT export; "
                            "run 'python -m training export --model PATH' once to write it")
    path = Path(model_path).with_name(meta.runtime.file)
    if not path.exists():
        raise ArtifactError(f"LiteRT model file not found: {path}")
    if sha256_file(path) != meta.runtime.sha256:
        raise ArtifactError(f"checksum mismatch for {path.name}: the file has been modified or does not belong "
                            "to its metadata. Refusing to load it.")
    return path


def load_model(model_path: str | os.PathLike = SHIPPED_MODEL):
    """(keras model, :class:`ModelMetadata`) after checksum and schema verification."""
    meta = read_verified_metadata(model_path)
    import keras

    model = keras.models.load_model(Path(model_path).with_suffix(".keras"), compile=False)
    return model, meta
