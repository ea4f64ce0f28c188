"""Which map is shown first, and whether its check and sanity test can tell a real explanation from a fake one."""

from __future__ import annotations

import numpy as np
import pytest

from model.faithfulness import control_maps, deletion_check
from model.sanity import rank_correlation
from training.explanations import MAX_EXTRA_PASSES, SUPPORTS_FLOOR, choose


def _candidate(normal, pneumonia, sanity, passes):
    return {"supports": {"NORMAL": normal, "PNEUMONIA": pneumonia}, "sanity": {"head + top block": sanity},
            "extra_passes": passes}


def test_the_rule_takes_the_qualifying_map_with_the_best_weaker_class_and_fewer_passes_on_a_tie():
    candidates = {
        "gradcam": _candidate(0.95, 0.40, 0.30, 0),  # fails the supports floor
        "gradcam++": _candidate(0.99, 0.99, 0.90, 0),  # fails the sanity check
        "occlusion-fine": _candidate(0.97, 0.96, 0.35, 169),  # too slow for a visitor
        "occlusion": _candidate(0.96, 0.93, 0.40, 85),
        "occlusion-coarse": _candidate(0.97, 0.91, 0.40, 49),  # within 3 points of the best: fewer passes win
    }
    assert choose(candidates) == "occlusion-coarse"
    candidates["occlusion-coarse"] = _candidate(0.97, 0.89, 0.40, 49)  # below the floor now
    assert choose(candidates) == "occlusion"


def test_without_a_qualifying_map_the_rule_keeps_to_the_sanity_and_cost_limits():
    candidates = {"gradcam": _candidate(0.95, 0.40, 0.30, 0), "gradcam++": _candidate(0.99, 0.99, 0.90, 0),
                  "occlusion-fine": _candidate(0.97, 0.96, 0.35, MAX_EXTRA_PASSES + 1),
                  "occlusion": _candidate(0.90, 0.70, 0.40, 85)}
    assert min(candidates["occlusion"]["supports"].values()) < SUPPORTS_FLOOR
    assert choose(candidates) == "occlusion"


def test_the_check_tells_the_real_map_from_its_controls_on_a_constructed_case():
    """A stand-in score reads only a smooth bright spot near the top left: a map centred on it supports the score; the
    inverse of that map, the image's edges (a checkerboard elsewhere) and noise do not."""
    rows, cols = np.mgrid[0:224, 0:224]
    bump = np.exp(-((rows - 48) ** 2 + (cols - 48) ** 2) / (2 * 20.0 ** 2)).astype(np.float32)
    image = np.repeat((0.4 + 0.5 * bump)[:, :, None], 3, axis=2)  # a smooth opacity: no sharp edge of its own
    checks = ((rows // 8 + cols // 8) % 2).astype(np.float32)
    image[112:, 112:] = checks[112:, 112:, None] * 0.8  # the image's strongest edges, far from what the score reads
    score = lambda batch: 10.0 * batch[:, 16:80, 16:80].mean(axis=(1, 2, 3)) - 4.0  # noqa: E731
    real = bump
    assert deletion_check(score, image, real).verdict == "supports"
    controls = control_maps(image, real)
    assert set(controls) == {"edges", "lung fields", "inverse of the map", "random noise"}
    for name in ("inverse of the map", "edges"):
        assert deletion_check(score, image, controls[name]).verdict == "does not support", name
    assert deletion_check(score, image, controls["random noise"]).verdict != "supports"


def _tiny_network():
    """A tiny convolutional net with the layer names of the project's backbones: block1_, top_, avg_pool, logit."""
    import keras

    from model.artifact import NetworkLayout

    keras.utils.set_random_seed(4)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="top_conv")(x)
    x = keras.layers.Activation("relu", name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, logit), NetworkLayout(32, "avg_pool", "top_activation", "logit")


def test_cascade_randomisation_changes_a_faithful_map_and_leaves_an_edge_detector_alone(monkeypatch):
    import cv2

    from model import explain, sanity

    class Edges:  # a "method" that reads only the image: a fixed edge detector
        extra_passes, slow, label = 0, False, "edges"

        @staticmethod
        def raw(x):
            gray = x.image.mean(axis=-1)
            return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))

    monkeypatch.setitem(explain.CAM_METHODS, "edges", Edges())
    model, network = _tiny_network()
    assert sanity.cascade_groups(model, network) == [["logit"], ["top_conv"], ["block1_conv"]]
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    result = sanity.sanity(model, network, images, ["PNEUMONIA"] * 4, ["gradcam", "edges"], steps=3)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the model itself is untouched
    assert all(v == pytest.approx(1.0) for v in result["edges"].values())
    assert result["gradcam"]["head + top block"] < 0.9


def test_rank_correlation_compares_on_the_checks_grid():
    ramp = np.tile(np.arange(224, dtype=np.float32), (224, 1))
    assert rank_correlation(ramp, ramp * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(ramp, ramp[:, ::-1]) == pytest.approx(1.0)  # absolute value: a flipped ranking is kept too
    assert rank_correlation(ramp, np.zeros_like(ramp)) == 0.0  # a map that vanished has changed
