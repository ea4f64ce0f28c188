"""Two-stage transfer learning, read top to bottom.

constants/config → data (patient-level split) → pipeline → build_model →
stage 1 (head only, base frozen) → unfreeze top blocks (BatchNorm frozen,
recompile, low LR) → stage 2 → calibrate and choose thresholds on validation →
write the artifact (``.keras`` + metadata JSON). The official test split is
never read here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.artifact import CLASS_NAMES, ModelMetadata, history_path, litert_entry, litert_path, save_metadata
from model.backbones import FEATURE_LAYER, build_classifier, network_layout, set_trainable_blocks
from model.explain import fit_cam_scale
from model.forward_pass import export_litert, keras_forward, run_in_batches
from model.ood import fit_ood
from model.predictor import calibrated_probability
from model.preprocessing import PreprocessConfig
from training import data as data_lib
from training import metrics as metrics_lib
from training import stress
from training.outside import counter_examples, inverted_copies

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    seed: int = 42  # initialisation of the head, data order, augmentation
    split_seed: int = -1  # patient-level validation split; -1: the same as seed. Members of one ensemble or soup share it
    val_fraction: float = 0.15
    input_size: int = 224
    batch_size: int = 32
    stage1_epochs: int = 3
    stage1_lr: float = 1e-3
    stage2_epochs: int = 12
    stage2_lr: float = 2e-4
    unfreeze_blocks: str = "8"  # a number of top blocks, or "all"
    dropout: float = 0.3
    label_smoothing: float = 0.05
    mixup_alpha: float = 0.0  # > 0: mixup with Beta(alpha, alpha) mixing weights
    freeze_batchnorm: bool = True  # keep ImageNet BatchNorm statistics; turn off for a random-init baseline
    weight_decay: float = 1e-4
    patience: int = 3
    schedule: str = "plateau"  # "plateau": ReduceLROnPlateau + early stopping; "cosine": fixed epochs, warm-up then cosine decay
    augment: bool = True
    rotation: float = 0.03  # fraction of a full turn (0.03: about ±11°)
    shift: float = 0.06  # fraction of the side
    zoom_height: float = 0.12  # ± fraction; height and width differ for anisotropic scaling
    zoom_width: float = 0.12
    limit_per_class: int = 0  # >0: use only this many training images per class (smoke runs, tests)
    outside: str = ""  # folder of counter-examples for the population gate (training/outside.py); "": distance only
    preprocessing: dict = field(default_factory=lambda: PreprocessConfig().to_dict())


class OneDevice:
    """The strategy stand-in off TensorFlow: one device, nothing to distribute."""

    num_replicas_in_sync = 1

    @staticmethod
    def scope():
        return contextlib.nullcontext()


def select_strategy():
    """On TensorFlow: MultiWorkerMirrored from TF_CONFIG, Mirrored on several GPUs, else the default (one
    device). Other Keras backends train on their one default device."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return OneDevice()
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def accelerator() -> str:
    """What the fit ran on, for the training record: the GPU's name, or "cpu"."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
    return "cpu"


def _learning_rate(peak, config, steps_per_epoch, epochs):
    """A constant peak, or 5 % linear warm-up then cosine decay to zero over the stage."""
    import keras

    if config.schedule != "cosine" or epochs <= 0:
        return peak
    total = max(2, steps_per_epoch * epochs)
    warmup = max(1, total // 20)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, warmup_target=peak, warmup_steps=warmup)


def _compile(model, learning_rate, config):
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def _callbacks(config, checkpoint_path, backup_dir):
    """Every stage backs up model and optimizer at each epoch's end (Keras ``BackupAndRestore``), so a run that
    is stopped (a session's time limit) resumes from its last finished epoch when the same command runs again."""
    import keras

    backup = keras.callbacks.BackupAndRestore(str(backup_dir))
    if config.schedule == "cosine":
        return [backup]  # fixed short schedule: the last epoch is kept (validation loss cannot see the shift)
    return [backup,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=max(1, config.patience - 2)),
        keras.callbacks.ModelCheckpoint(str(checkpoint_path), monitor="val_loss", save_best_only=True, save_weights_only=True),
    ]


def class_weights(labels: np.ndarray) -> dict:
    """Inverse-frequency weights, so each class contributes equally to the loss (data is ~1:2.9)."""
    counts = np.bincount(labels, minlength=2)
    return {c: float(len(labels) / (2 * counts[c])) for c in range(2)}


def _limit(examples, per_class, seed):
    if per_class <= 0:
        return examples
    rng = np.random.default_rng(seed)
    kept = []
    for label in (0, 1):
        group = [e for e in examples if e.label == label]
        kept += [group[i] for i in sorted(rng.choice(len(group), min(per_class, len(group)), replace=False))]
    return kept


def _split_and_load(data, limit_per_class, seed, val_fraction, preprocess):
    """(train examples, validation examples, (x, y) train, (x, y) validation): the seeded patient split of train/."""
    examples = _limit(data_lib.list_split(data, "train"), limit_per_class, seed)
    train_examples, val_examples = data_lib.patient_split(examples, val_fraction, seed)
    log.info("split: %d train / %d validation images (patients: %d / %d)", len(train_examples), len(val_examples),
             len({e.patient for e in train_examples}), len({e.patient for e in val_examples}))
    x_train, y_train, _ = data_lib.load_images(train_examples, preprocess)
    x_val, y_val, _ = data_lib.load_images(val_examples, preprocess)
    return train_examples, val_examples, (x_train, y_train), (x_val, y_val)


def geometry(config: TrainConfig):
    from training.pipeline import Geometry

    return Geometry(config.rotation, config.shift, config.zoom_height, config.zoom_width)


FIT_WEIGHTS = "fitted.weights.h5"
FIT_RECORD = "fit_record.json"


def train(config: TrainConfig) -> Path:
    """Run the whole recipe; returns the path of the written ``.keras`` model.

    The fit runs on any Keras backend and leaves its weights and record in ``out`` (:data:`FIT_WEIGHTS`,
    :data:`FIT_RECORD`). Writing the artifact (calibration, gate, LiteRT export) needs TensorFlow: on another
    backend (torch on an accelerator) this stops after the fit and returns the weights' path; the same command
    run where TensorFlow is the backend finds the finished fit, checks that its settings and split are this
    command's, and writes the artifact from it.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"pneumonia_{config.backbone}.keras"
    preprocess = PreprocessConfig.from_dict(dict(config.preprocessing, input_size=config.input_size))

    # Data: patient-level split of train/ only.
    split_seed = config.seed if config.split_seed < 0 else config.split_seed
    train_examples, val_examples, (x_train, y_train), (x_val, y_val) = _split_and_load(
        config.data, config.limit_per_class, split_seed, config.val_fraction, preprocess)
    dataset = {"train": data_lib.fingerprint(train_examples), "validation": data_lib.fingerprint(val_examples),
               "split": {"seed": split_seed, "val_fraction": config.val_fraction,
                         "grouping": "patient id from file name", "stratified": True}}

    if (out / FIT_RECORD).exists() and (out / FIT_WEIGHTS).exists():
        model, fit_facts, history = _finished_fit(config, out, dataset)
    else:
        model, fit_facts, history = _fit(config, out, (x_train, y_train), (x_val, y_val))
        _clean_copy(model, config).save_weights(str(out / FIT_WEIGHTS))  # without the optimizer's state
        (out / FIT_RECORD).write_text(json.dumps({"config": asdict(config), "dataset": dataset, "fit": fit_facts,
                                                   "history": _jsonable(history)}, indent=1))
    if keras.backend.backend() != "tensorflow":
        log.info("fitted on the %s backend: %s. Run the same command with TensorFlow as the Keras backend to "
                 "write the artifact", keras.backend.backend(), out / FIT_WEIGHTS)
        return out / FIT_WEIGHTS
    record = dict(asdict(config), **fit_facts)
    history_path(model_path).write_text(json.dumps(_jsonable(history), indent=1))
    outside = counter_examples(config.outside, preprocess)
    write_artifact(model, model_path, config, preprocess, record, dataset, (x_train, x_val, y_val), outside)
    for name in (FIT_WEIGHTS, FIT_RECORD):
        (out / name).unlink()
    log.info("wrote %s", model_path)
    return model_path


def _fit(config: TrainConfig, out: Path, train_arrays, val_arrays):
    """Stage 1 (head on frozen features), then stage 2 (top blocks, BatchNorm frozen) -> (model, facts, history)."""
    import keras

    from training.pipeline import Batches

    (x_train, y_train), (x_val, y_val) = train_arrays, val_arrays
    strategy = select_strategy()
    batch = config.batch_size * strategy.num_replicas_in_sync
    weights = class_weights(y_train)
    # Worker threads only on TensorFlow: on torch (and JAX) Keras 3.15's fit pulls a first batch, then resets the
    # PyDataset while its prefetch threads hold up to a queue's worth of batches, which the next epoch serves first
    # (a few batches of each epoch's shuffle slip into the next). One worker keeps every epoch exactly one shuffle.
    workers = min(4, os.cpu_count() or 1) if keras.backend.backend() == "tensorflow" else 1
    train_batches = Batches(x_train, y_train, batch, training=config.augment, seed=config.seed, class_weights=weights,
                            mixup_alpha=config.mixup_alpha, geometry=geometry(config), workers=workers)
    steps = len(train_batches)
    val_batches = Batches(x_val, y_val, batch, training=False)
    history = {}

    with strategy.scope():
        model = build_classifier(config.backbone, config.weights, config.input_size, config.dropout)

        # Stage 1: train the head on frozen ImageNet features.
        set_trainable_blocks(model, config.backbone, 0)
        _compile(model, _learning_rate(config.stage1_lr, config, steps, config.stage1_epochs), config)
    start = time.time()
    if config.stage1_epochs > 0:
        h = model.fit(train_batches, validation_data=val_batches, epochs=config.stage1_epochs,
                      callbacks=_callbacks(config, out / "best.weights.h5", out / "backup_stage1"), verbose=2)
        history["stage1"] = h.history

    # Stage 2: unfreeze the top blocks (BatchNorm stays in inference mode), lower learning rate.
    with strategy.scope():
        set_trainable_blocks(model, config.backbone, config.unfreeze_blocks, config.freeze_batchnorm)
        _compile(model, _learning_rate(config.stage2_lr, config, steps, config.stage2_epochs), config)
    if config.stage2_epochs > 0:
        h = model.fit(train_batches, validation_data=val_batches, epochs=config.stage2_epochs,
                      callbacks=_callbacks(config, out / "best.weights.h5", out / "backup_stage2"), verbose=2)
        history["stage2"] = h.history
    (out / "best.weights.h5").unlink(missing_ok=True)
    facts = dict(train_seconds=round(time.time() - start, 1), cpu_cores=os.cpu_count(),
                 backend=keras.backend.backend(), keras_version=keras.__version__, accelerator=accelerator(),
                 epochs_run={k: len(v.get("loss", [])) for k, v in history.items()}, class_weights=weights)
    return model, facts, history


def _finished_fit(config: TrainConfig, out: Path, dataset: dict):
    """The fit a run left in ``out`` (perhaps on another machine and backend) -> (model, facts, history), after
    checking it was made with this command's settings (data and out folders aside) on the same split."""
    saved = json.loads((out / FIT_RECORD).read_text())
    current = json.loads(json.dumps(asdict(config)))
    where = ("data", "out", "outside")  # folders, which differ between machines; outside is read after the fit
    differing = sorted(k for k, v in current.items() if k not in where and saved["config"].get(k) != v)
    if differing:
        raise ValueError(f"{out / FIT_RECORD} was fitted with other settings: {', '.join(differing)} (delete "
                         f"{FIT_WEIGHTS} and {FIT_RECORD} there to fit again)")
    for part in ("train", "validation"):
        if saved["dataset"][part]["names_sha256"] != dataset[part]["names_sha256"]:
            raise ValueError(f"{out / FIT_RECORD} was fitted on another {part} split than this data folder gives")
    model = build_classifier(config.backbone, "none", config.input_size, config.dropout)
    model.load_weights(str(out / FIT_WEIGHTS))
    log.info("resuming from the fit in %s (%s backend, %s)", out, saved["fit"].get("backend"), saved["fit"].get("accelerator"))
    return model, saved["fit"], saved["history"]


def write_artifact(model, model_path: Path, config: TrainConfig, preprocess: PreprocessConfig, record: dict,
                   dataset: dict, arrays, outside=None) -> ModelMetadata:
    """After training: fit temperature, thresholds and OOD gate on train/ data, then write the ``.keras`` file
    (uncompiled), its LiteRT export and the metadata that describes both."""
    x_train, x_val, y_val = arrays
    network = network_layout(config.backbone, config.input_size)
    fitted = fit_on_validation(scoring_forward(model, network.feature_layer), x_train, x_val, y_val, outside,
                               keras_forward(model, network), network.feature_layer)
    _save_clean(model, config, model_path)
    export_litert(model, network, litert_path(model_path))
    save_metadata(model_path, {
        "model_name": f"pneumonia_{config.backbone}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": config.backbone,
        "preprocessing": preprocess,
        **asdict(network),
        "runtime": litert_entry(model_path),
        **fitted,
        "training": record,
        "dataset": dataset,
    })
    return record_explanation(model_path, model, x_val, y_val)


def record_explanation(model_path: str | Path, model, x_val, y_val) -> ModelMetadata:
    """Choose the heatmap shown first by the written rule (:mod:`training.explanations`) on the served export of
    ``model`` and its validation images, and record the choice in the metadata beside ``model_path``."""
    from model.artifact import read_verified_metadata
    from model.predictor import Predictor
    from training.explanations import fit_explanation

    choice = fit_explanation(Predictor.load(model_path), model, x_val, y_val)
    return save_metadata(model_path, read_verified_metadata(model_path).replace(explanation=choice))


def refit_explanation(model_path: str | Path, data: str) -> ModelMetadata:
    """Refit only what depends on the heatmaps (their fixed scale, the map shown first) for an existing model on
    its own validation split; calibration, thresholds, gate and recorded test metrics stay as they are."""
    from model.artifact import load_model
    from model.predictor import Predictor

    model, meta = load_model(model_path)
    split = meta.dataset["split"]
    examples = _limit(data_lib.list_split(data, "train"), meta.training.get("limit_per_class", 0), split["seed"])
    _, val_examples = data_lib.patient_split(examples, split["val_fraction"], split["seed"])
    if data_lib.fingerprint(val_examples)["names_sha256"] != meta.dataset["validation"]["names_sha256"]:
        raise ValueError("the data folder does not reproduce this model's validation split")
    x_val, y_val, _ = data_lib.load_images(val_examples, meta.preprocessing)
    images = np.repeat(x_val, 3, axis=-1)
    scale = fit_cam_scale(Predictor.load(model_path).forward, {name: images[y_val == i] for i, name in enumerate(CLASS_NAMES)})
    save_metadata(model_path, meta.replace(cam_scale=scale))
    return record_explanation(model_path, model, x_val, y_val)


def fit_on_validation(forward, x_train, x_val, y_val, outside: dict | None = None, cam_forward=None,
                      feature_layer: str | None = None) -> dict:
    """Everything chosen after training, on data carved from train/ only: temperature, thresholds and
    operating points on the shift-stress rendering of the validation split (:mod:`training.stress`),
    the population gate on clean training and validation features (with ``outside``, population class ->
    counter-example images, its head too; inverted training X-rays are added); metrics on both validation
    sets; and, given ``cam_forward`` (the full pass, :func:`model.forward_pass.keras_forward`), the heatmaps'
    fixed scale on the clean validation images of each class (:func:`model.explain.fit_cam_scale`)."""
    val_logits, val_features = forward_all(forward, x_val)
    _, train_features = forward_all(forward, x_train)
    x_stress, y_stress = stress.stress_set(x_val, y_val)
    stress_logits, _ = forward_all(forward, x_stress)
    outside_features = None
    if outside:
        outside = dict(outside, inverted=inverted_copies(x_train))
        outside_features = {kind: forward_all(forward, images)[1] for kind, images in outside.items() if len(images)}
    fitted = dict(calibrate_and_threshold(val_logits, y_val, stress_logits, y_stress),
                  ood=fit_ood(train_features, val_features, outside=outside_features,
                              feature_source={"layer": feature_layer or FEATURE_LAYER, "pooling": "mean"}))
    if cam_forward is not None:
        labels = np.asarray(y_val).ravel()
        fitted["cam_scale"] = fit_cam_scale(cam_forward, {name: x_val[labels == index] for index, name in enumerate(CLASS_NAMES)})
    return fitted


def calibrate_and_threshold(val_logits, y_val, stress_logits, y_stress) -> dict:
    """Temperature and thresholds fitted on the stress set; validation and stress metrics at the default threshold.

    Presets since v3 (:func:`training.metrics.ordered_presets`): screening, balanced (the default) and
    confirmatory, in threshold order. (v2.2 defaulted to "sensitive", stress sensitivity >= 0.95, whose
    threshold sat above Youden's: its name contradicted its figures, and it is retired.)"""
    temperature = metrics_lib.fit_temperature(stress_logits, y_stress)
    stress_prob = calibrated_probability(stress_logits, temperature)
    val_prob = calibrated_probability(val_logits, temperature)
    thresholds = metrics_lib.ordered_presets(y_stress, stress_prob)
    default = thresholds[thresholds["default"]]["value"]
    validation = dict(metrics_lib.ranking_metrics(y_val, val_prob), **metrics_lib.classification_metrics(y_val, val_prob, default))
    stressed = dict(metrics_lib.ranking_metrics(y_stress, stress_prob),
                    log_loss_uncalibrated=metrics_lib.log_loss(y_stress, calibrated_probability(stress_logits, 1.0)),
                    **metrics_lib.classification_metrics(y_stress, stress_prob, default))
    log.info("validation: %s", json.dumps(validation))
    log.info("stress validation: %s", json.dumps(stressed))
    return {
        "calibration": {"method": "temperature scaling on the stress-validation logits", "temperature": temperature},
        "thresholds": thresholds,
        "operating_points": metrics_lib.operating_points(y_stress, stress_prob),
        "validation_prevalence": float(np.mean(y_val)),
        "stress": stress.describe(),
        "metrics": {"validation": validation, "stress_validation": stressed},
    }


def refit(model_path: str | Path, data: str, outside: str | None = None, version: str | None = None) -> ModelMetadata:
    """Redo :func:`fit_on_validation` for an existing model on its own split; rewrite its metadata.

    The ``.keras`` file is untouched, so its checksum stays valid. Test metrics
    recorded earlier are dropped: they belonged to the old thresholds. When the
    backbone's gate layer (:func:`model.backbones.network_layout`) differs from the
    model's recorded ``feature_layer``, the LiteRT pass is re-exported to serve it.
    """
    from model.artifact import load_model

    model, meta = load_model(model_path)
    split = meta.dataset["split"]
    _, val_examples, (x_train, _), (x_val, y_val) = _split_and_load(
        data, meta.training.get("limit_per_class", 0), split["seed"], split["val_fraction"], meta.preprocessing)
    if data_lib.fingerprint(val_examples)["names_sha256"] != meta.dataset["validation"]["names_sha256"]:
        raise ValueError("the data folder does not reproduce this model's validation split")
    counter = counter_examples(outside, meta.preprocessing)
    meta = meta.replace(model_version=version or meta.model_version)
    gate_layer = network_layout(meta.backbone, meta.input_size).feature_layer
    if gate_layer != meta.feature_layer:  # the gate reads another layer now: the served pass must output it
        log.info("population gate source %s -> %s: re-exporting the LiteRT pass", meta.feature_layer, gate_layer)
        meta = meta.replace(feature_layer=gate_layer)
        export_litert(model, meta.network, litert_path(model_path))
        meta = meta.replace(runtime=litert_entry(model_path))
    return refit_loaded(model_path, model, meta, (x_train, x_val, y_val), counter)


def refit_loaded(model_path: str | Path, model, meta: ModelMetadata, arrays, outside: dict | None = None) -> ModelMetadata:
    """:func:`refit` on images already in memory (its own split's train and validation arrays)."""
    x_train, x_val, y_val = arrays
    fitted = fit_on_validation(scoring_forward(model, meta.feature_layer), x_train, x_val, y_val, outside,
                               keras_forward(model, meta.network), meta.feature_layer)
    save_metadata(model_path, dict(meta.to_dict(), **fitted))
    log.info("refitted calibration, thresholds, population gate and heatmap scale of %s", model_path)
    return record_explanation(model_path, model, x_val, y_val)


def scoring_forward(model, feature_layer: str | None = None):
    """images -> (logits, the gate's features) without the Grad-CAM gradients: half the work, for scoring thousands
    of images during fitting and selection (the served pass, :func:`model.forward_pass.keras_forward`, has them).
    ``feature_layer`` (default: the head's pooled input; fitting a gate passes the network layout's) is
    average-pooled when it is a feature map, as in the served pass."""
    import keras
    import tensorflow as tf

    from model.backbones import LOGIT_LAYER

    features = model.get_layer(feature_layer or FEATURE_LAYER).output
    if len(features.shape) == 4:
        features = keras.ops.mean(features, axis=(1, 2))
    view = keras.Model(model.inputs, [model.get_layer(LOGIT_LAYER).output, features])
    size = model.input_shape[1]
    function = tf.function(lambda x: view(x, training=False), input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])

    def run(images):
        logits, features = function(tf.constant(np.asarray(images, np.float32)))
        return Scores(logits.numpy()[:, 0], features.numpy())

    return run


@dataclass(frozen=True)
class Scores:
    logits: np.ndarray
    features: np.ndarray


def forward_all(forward, images, batch_size=64):
    """(logits, pooled features) for single-channel images (N, S, S, 1), in batches."""
    scores = run_in_batches(lambda batch: forward(np.repeat(batch, 3, axis=-1)), images, batch_size)
    return scores.logits, scores.features


def export(model_path: str | Path) -> ModelMetadata:
    """Write the LiteRT export of an existing model and record it in the metadata (the ``.keras`` is untouched)."""
    from model.artifact import load_model

    model, meta = load_model(model_path)
    export_litert(model, meta.network, litert_path(model_path))
    meta = save_metadata(model_path, meta.replace(runtime=litert_entry(model_path)))
    log.info("wrote %s", litert_path(model_path))
    return meta


def _save_clean(model, config, path):
    """Save an uncompiled copy: no optimizer state in the shipped file."""
    _clean_copy(model, config).save(path)


def _clean_copy(model, config):
    """The same network and weights, uncompiled: what is saved carries no optimizer state."""
    clean = build_classifier(config.backbone, "none", config.input_size, config.dropout)
    clean.set_weights(model.get_weights())
    return clean


def _jsonable(history):
    return {stage: {k: [float(v) for v in values] for k, values in h.items()} for stage, h in history.items()}
