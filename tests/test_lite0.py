"""The EfficientNet-Lite0 port: ImageNet weights read without torch give correct ImageNet classes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from model.lite0 import imagenet_classifier, imagenet_logits
from model.torch_legacy import load_legacy_state_dict

# ImageNet class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
CATS = {281, 282, 285}
COFFEE = {967, 968}


@pytest.fixture(scope="module")
def classifier():
    return imagenet_classifier()


@pytest.mark.parametrize("name, classes", [("chelsea", CATS), ("coffee", COFFEE)])
def test_photographs_get_correct_imagenet_class(classifier, name, classes):
    image = cv2.resize(getattr(skdata, name)(), (224, 224), interpolation=cv2.INTER_AREA)
    top5 = set(np.argsort(imagenet_logits(classifier, image))[::-1][:5].tolist())
    assert top5 & classes, f"{name}: top-5 {sorted(top5)} has none of {sorted(classes)}"


def test_reader_refuses_non_torch_files(tmp_path):
    bogus = tmp_path / "weights.pth"
    import pickle

    bogus.write_bytes(pickle.dumps(12345))
    with pytest.raises(ValueError, match="legacy PyTorch"):
        load_legacy_state_dict(str(bogus))
