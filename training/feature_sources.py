"""Candidate feature sources for the population gate, extracted once and cached.

The gate (``model/ood.py``) reads one vector per image from the forward pass.
Since v2.3 that was the pooled output of the last layer (``avg_pool``), which
moves with every fine-tune. This module computes, in ONE pass over every image
the gate is fitted or measured on, the global-average (and spatial standard
deviation) pooled outputs of several layers of:

- each classifier network given (v3, v2.3: which layer holds across the two);
- the frozen ImageNet Lite0 the classifiers started from (the same for every
  model round by construction).

Images: the model's own split of ``train/`` (train and clean validation), the
official test split, the external counter-examples (``training/outside.py``)
and the inverted copies of training X-rays the head is taught with. Everything
is written to one ``.npz`` per network plus one index file, so every gate fit
and measurement afterwards is NumPy on cached features
(``python -m training gate-features``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from training import data as data_lib
from training.outside import inverted_copies, list_outside, load_outside

log = logging.getLogger(__name__)

IMAGENET = "imagenet"  # the frozen ImageNet Lite0, as the classifiers were initialised
# Layers whose pooled output is a candidate: the stage ends of Lite0 (channels 40, 80, 112, 192, 320), the widest
# late expansions, and the last layer (today's source).
CANDIDATE_LAYERS = ("block4_add", "block7_add", "block10_add", "block11_expand_activation", "block14_add",
                    "block15_expand_activation", "block15_project_bn", "top_activation")


def _pooled_view(model):
    """Keras model: images -> {layer: (mean over space, std over space)} for every FEATURE_LAYERS layer, + logit."""
    import keras

    outputs = {}
    for layer in CANDIDATE_LAYERS:
        x = model.get_layer(layer).output
        outputs[f"{layer}:mean"] = keras.ops.mean(x, axis=(1, 2))
        outputs[f"{layer}:std"] = keras.ops.std(x, axis=(1, 2))
    if "logit" in [layer.name for layer in model.layers]:
        outputs["logit"] = model.get_layer("logit").output[:, 0]
    return keras.Model(model.inputs, outputs)


def imagenet_network():
    """The ImageNet-initialised Lite0 (no head), as a classifier is before fine-tuning."""
    import keras

    from model import lite0

    images = keras.Input((224, 224, 3), name="image")
    features = lite0.lite0_features(images)
    model = keras.Model(images, keras.layers.GlobalAveragePooling2D(name="avg_pool")(features))
    lite0.load_imagenet_weights(model)
    return model


def _split_images(data: str, meta):
    """{split name: (float32 (N, S, S, 1) images, labels)}: the model's own train/validation split, test."""
    split = meta.dataset["split"]
    examples = data_lib.list_split(data, "train")
    train_ex, val_ex = data_lib.patient_split(examples, split["val_fraction"], split["seed"])
    out = {}
    for name, chosen in (("train", train_ex), ("val", val_ex), ("test", data_lib.list_split(data, "test"))):
        x, y, _ = data_lib.load_images(chosen, meta.preprocessing)
        out[name] = (x, y)
    return out


def extract(models: dict[str, str], data: str, outside: str, out_dir: str, batch_size: int = 32,
            only: list[str] | None = None) -> Path:
    """Write ``out_dir/features_{network}.npz`` (keys ``{split}/{layer}:{mean|std}``, ``{split}/logit``) for every
    network (name -> model path, plus the frozen ImageNet Lite0; ``only``: just these) and ``out_dir/index.json`` (labels, the external
    images' source, kind, age, label, group)."""
    import tensorflow as tf

    from model.artifact import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    networks, metas = {}, {}
    for name, path in models.items():
        networks[name], metas[name] = load_model(path)
    networks[IMAGENET] = imagenet_network()
    meta = next(iter(metas.values()))
    if any(m.preprocessing != meta.preprocessing for m in metas.values()):
        raise ValueError("the networks preprocess differently: one image cache cannot serve them all")
    splits = _split_images(data, meta)
    external, kept = load_outside(list_outside(outside), meta.preprocessing)
    splits["external"] = (external, np.zeros(len(external), np.int32))
    splits["inverted"] = (inverted_copies(splits["train"][0]), np.zeros(0, np.int32))
    index = {"labels": {k: v[1].tolist() for k, v in splits.items()},
             "external": [{"path": str(i.path), "source": i.source, "kind": i.kind, "age": i.age, "label": i.label,
                           "group": i.group} for i in kept],
             "models": {name: {"path": path, "sha256": metas[name].sha256, "version": metas[name].model_version,
                               "temperature": metas[name].calibration.temperature,
                               "default_threshold": metas[name].thresholds.default_value}
                        for name, path in models.items()}}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    for name, network in networks.items():
        if only and name not in only:
            continue
        view = _pooled_view(network)
        run = tf.function(lambda x, v=view: v(x, training=False),
                          input_signature=[tf.TensorSpec((None, 224, 224, 3), tf.float32)])
        arrays = {}
        for split, (x, _) in splits.items():
            parts = [{k: v.numpy() for k, v in run(tf.constant(np.repeat(x[i:i + batch_size], 3, axis=-1))).items()}
                     for i in range(0, len(x), batch_size)]
            for key in parts[0]:
                arrays[f"{split}/{key}"] = np.concatenate([p[key] for p in parts]).astype(np.float32)
            log.info("%s: %s done (%d images)", name, split, len(x))
        np.savez_compressed(out / f"features_{name}.npz", **arrays)
    return out
