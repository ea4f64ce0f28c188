"""Backbone registry and the flat classifier graph."""

from __future__ import annotations

import keras
import pytest

from model.backbones import BACKBONES, build_classifier, get_backbone, set_trainable_blocks


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="efficientnet_lite0.*vgg19"):
        get_backbone("resnet9000")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_b0"])
def test_classifier_is_one_flat_graph(name):
    model = build_classifier(name, "none", input_size=64)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "nested model: Grad-CAM can't reach in"
    assert model.get_layer(BACKBONES[name].cam_layer) is not None
    assert model.output.shape == (None, 1)


def test_set_trainable_blocks_keeps_batchnorm_frozen():
    model = build_classifier("efficientnet_lite0", "none", input_size=64)
    set_trainable_blocks(model, "efficientnet_lite0", 2)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert "logit" in trainable and "top_conv" in trainable and "block15_project_conv" in trainable
    assert "block14_project_conv" not in trainable and "stem_conv" not in trainable
    assert not any(isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in trainable)
    set_trainable_blocks(model, "efficientnet_lite0", 0)
    assert {layer.name for layer in model.layers if layer.trainable and layer.weights} == {"logit"}
    set_trainable_blocks(model, "efficientnet_lite0", "all")
    assert model.get_layer("stem_conv").trainable
