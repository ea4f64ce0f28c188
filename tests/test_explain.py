"""CAM methods: heatmap contract, agreement with tf-keras-vis, the LiteRT engine, overlay helper."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.artifact import NetworkLayout
from model.backbones import build_classifier, network_layout
from model.explain import CAM_METHODS, LITTLE_EVIDENCE, CamExplainer, EvidenceMap, fit_cam_scale, overlay_heatmap
from model.forward_pass import LiteRtForward, export_litert, keras_forward
from model.preprocessing import prepare

NETWORK = network_layout("efficientnet_lite0", 224)
# Each kind of method once: the occlusion grids share one code path, and the finer ones only cost more passes.
ONE_OF_EACH = sorted(m for m in CAM_METHODS if m not in ("occlusion", "occlusion-fine"))


@pytest.fixture(scope="module")
def lite0_model():
    """ImageNet Lite0 with a head whose logit is the mean pooled feature: every channel counts positively."""
    model = build_classifier("efficientnet_lite0", "imagenet")
    dense = model.get_layer("logit")
    dense.set_weights([np.full((1280, 1), 1.0 / 1280, np.float32), np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="module")
def explainer(lite0_model):
    return CamExplainer(keras_forward(lite0_model, NETWORK))


@pytest.fixture(scope="module")
def litert_file(lite0_model, tmp_path_factory):
    return export_litert(lite0_model, NETWORK, tmp_path_factory.mktemp("litert") / "m.tflite")


@pytest.fixture(scope="module")
def litert_forward(litert_file):
    return LiteRtForward(litert_file)


@pytest.fixture(scope="module")
def xray(sample_files):
    return prepare(sample_files[0].read_bytes()).model_input


@pytest.mark.parametrize("method", ONE_OF_EACH)
def test_heatmap_shape_range_and_not_constant(explainer, xray, method):
    heatmap = explainer.explain(xray, method, output_size=(300, 250))
    assert heatmap.shape == (300, 250) and heatmap.dtype == np.float32
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.05


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_matches_tf_keras_vis(lite0_model, explainer, xray, method):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

    reference_cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}[method]
    logit_model = keras.Model(lite0_model.inputs, lite0_model.get_layer("logit").output)
    reference = reference_cls(logit_model)(
        lambda output: output[:, 0], xray[None], penultimate_layer="top_activation",
        seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    ours = explainer.raw_cam(xray, method)
    np.testing.assert_allclose(ours, np.asarray(reference)[0], rtol=1e-3, atol=1e-5 * float(ours.max()))


def test_normal_target_flips_the_gradient_sign(explainer, xray):
    pneumonia = explainer.raw_cam(xray, "gradcam", target="PNEUMONIA")
    normal = explainer.raw_cam(xray, "gradcam", target="NORMAL")
    assert pneumonia.max() > 0 and normal.max() == 0  # this head only ever votes PNEUMONIA


def test_model_is_not_modified(lite0_model, explainer, xray):
    before = [w.copy() for w in lite0_model.get_weights()]
    explainer.explain(xray, "scorecam")
    assert all(np.array_equal(a, b) for a, b in zip(before, lite0_model.get_weights(), strict=False))
    assert len(lite0_model.outputs) == 1


def test_unknown_method_and_layer_are_explained(lite0_model, explainer, xray):
    with pytest.raises(ValueError, match="gradcam"):
        explainer.explain(xray, "magic")
    with pytest.raises(ValueError, match="no layer named"):
        keras_forward(lite0_model, NetworkLayout(224, "avg_pool", "not_a_layer", "logit"))


def test_litert_export_computes_the_same_pass(lite0_model, litert_forward, xray):
    batch = np.stack([xray, xray[::-1], np.zeros_like(xray)])
    reference, exported = keras_forward(lite0_model, NETWORK)(batch), litert_forward(batch)
    for name in ("logits", "features", "activations", "gradients"):
        ours, theirs = getattr(exported, name), getattr(reference, name)
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()), err_msg=name)


def test_a_batch_split_between_two_lanes_keeps_order_and_numbers(litert_forward, litert_file, xray):
    batch = np.stack([xray, xray[::-1], xray[:, ::-1], np.zeros_like(xray), xray * 0.5])  # 3 + 2 side by side
    together = LiteRtForward(litert_file, num_threads=2, lanes=2)(batch)
    alone = [litert_forward(image[None]) for image in batch]  # one lane using every core
    for name in ("logits", "features", "activations", "gradients"):
        np.testing.assert_allclose(getattr(together, name), np.concatenate([getattr(a, name) for a in alone]),
                                   rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("method", ONE_OF_EACH)
def test_cam_from_the_prediction_pass_is_the_same_map(explainer, lite0_model, xray, method):
    computed = keras_forward(lite0_model, NETWORK)(xray[None])
    np.testing.assert_array_equal(explainer.explain(xray, method, computed=computed), explainer.explain(xray, method))


def test_registry_says_which_methods_cost_extra_passes():
    assert [m.name for m in CAM_METHODS.values() if m.slow] == ["scorecam", "occlusion", "occlusion-coarse", "occlusion-fine"]
    assert {m.label for m in CAM_METHODS.values()} >= {"Grad-CAM", "Grad-CAM++", "Score-CAM", "Occlusion"}
    for method in CAM_METHODS.values():
        if hasattr(method, "positions"):  # occlusion: one extra pass per patch position at 224 px
            assert len(method.positions(224)) == method.extra_passes, method.name


def _region_forward(rows=slice(0, 64), cols=slice(0, 64)):
    """A stand-in network whose PNEUMONIA logit is 20 x the mean brightness of one region (top-left by default)."""
    from model.forward_pass import ForwardPass

    def forward(images):
        images = np.asarray(images, np.float32)
        n = len(images)
        logits = 20.0 * images[:, rows, cols].mean(axis=(1, 2, 3)) - 5.0
        return ForwardPass(logits, np.zeros((n, 4), np.float32), np.ones((n, 7, 7, 4), np.float32),
                           np.zeros((n, 7, 7, 4), np.float32))
    return forward


@pytest.mark.parametrize("method", ["occlusion-coarse", "occlusion"])
def test_occlusion_finds_the_region_the_network_reads(method):
    image = np.full((224, 224, 3), 0.3, np.float32)
    image[:64, :64] = 0.9  # the region the stand-in network reads is bright: hiding it lowers the logit
    cam = CamExplainer(_region_forward()).raw_cam(image, method)
    assert cam.shape == (224, 224) and cam.min() >= 0
    assert cam[:64, :64].mean() > 10 * max(cam[96:, 96:].mean(), 1e-6)
    normal = CamExplainer(_region_forward()).raw_cam(image, method, target="NORMAL")
    assert normal[:64, :64].max() == 0  # hiding the region raises NORMAL's evidence: no evidence for NORMAL there


def test_an_occluded_patch_is_filled_from_its_surroundings_not_from_itself():
    from model.explain import OCCLUSION_PATCH, _occluded

    image = np.full((224, 224, 3), 0.2, np.float32)
    image[96:128, 96:128] = 1.0  # a bright patch exactly where the occlusion goes
    filled = _occluded(image, 96, 96)
    assert np.allclose(filled[96:96 + OCCLUSION_PATCH, 96:96 + OCCLUSION_PATCH], 0.2, atol=1e-3)
    outside = np.ones((224, 224), bool)
    outside[96:128, 96:128] = False
    assert np.array_equal(filled[outside], image[outside]) and filled is not image


@pytest.mark.parametrize("row, col", [(0, 0), (96, 64), (192, 192), (16, 176)])
def test_a_grey_image_is_filled_on_one_channel_to_the_same_pixels(xray, row, col):
    from model.explain import _occluded

    np.testing.assert_allclose(_occluded(xray, row, col, grey=True), _occluded(xray, row, col), atol=1e-6)


@pytest.mark.parametrize("method", ONE_OF_EACH)
def test_litert_explainer_matches_tensorflow(explainer, litert_forward, xray, method):
    litert = CamExplainer(litert_forward).explain(xray, method)
    np.testing.assert_allclose(litert, explainer.explain(xray, method), atol=2e-3)


def test_overlay_contract():
    gray = np.tile(np.arange(100, dtype=np.uint8), (80, 1))
    heatmap = np.zeros((10, 10), np.float32)
    heatmap[5:, 5:] = 1.0
    out = overlay_heatmap(gray, heatmap, "jet", 0.5)
    assert out.shape == (80, 100, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay_heatmap(gray, heatmap, opacity=0.0)[:, :, 0], gray)
    with pytest.raises(ValueError, match="opacity"):
        overlay_heatmap(gray, heatmap, opacity=2.0)
    with pytest.raises(ValueError, match="heatmap"):
        overlay_heatmap(gray, heatmap * 3)


def test_evidence_map_absolute_and_per_image():
    cam = np.zeros((8, 8), np.float32)
    cam[2, 3] = 0.5
    weak = EvidenceMap(cam, reference=10.0)
    assert weak.peak == pytest.approx(0.05) and weak.little_evidence
    assert weak.heatmap().max() == pytest.approx(0.05)  # weak evidence looks weak
    assert weak.heatmap(per_image=True).max() == pytest.approx(1.0)  # the per-image switch stretches it
    strong = EvidenceMap(cam * 40, reference=10.0)
    assert strong.heatmap().max() == 1.0 and not strong.little_evidence  # above full scale: capped
    unscaled = EvidenceMap(cam, reference=None)  # older metadata: no reference, per-image scaling
    assert unscaled.peak is None and not unscaled.little_evidence and unscaled.heatmap().max() == pytest.approx(1.0)


def test_fit_cam_scale_is_a_percentile_of_the_peaks(lite0_model, xray):
    images = np.stack([xray * f for f in (0.2, 0.6, 1.0)])
    scale = fit_cam_scale(keras_forward(lite0_model, NETWORK), {"PNEUMONIA": images}, percentile=50.0, slow_images=1)
    slow = {name: 1 for name, method in CAM_METHODS.items() if method.slow}
    explainer = CamExplainer(keras_forward(lite0_model, NETWORK))
    peaks = [explainer.evidence(image, "gradcam").cam.max() for image in images]
    assert scale.reference["PNEUMONIA"]["gradcam"] == pytest.approx(np.median(peaks), rel=1e-4)
    assert scale.images["PNEUMONIA"] == {"gradcam": 3, "gradcam++": 3, **slow}
    assert scale.value("gradcam", "PNEUMONIA") > 0 and scale.value("gradcam", "NORMAL") is None


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_shipped_scale_keeps_a_confident_normal_film_faint(sample_files, method):
    """On the shipped model's fixed scale, a confident normal film's pneumonia map stays below LITTLE_EVIDENCE of
    full colour; each pneumonia sample's map does not (per-image scaling showed both at full colour)."""
    from model.predictor import Predictor
    from model.service import analyze_bytes, explain_with_check

    predictor = Predictor.load()
    assert predictor.metadata.cam_scale is not None, "the shipped model has no fitted heatmap scale"
    explainer = CamExplainer.for_predictor(predictor)
    for path in sample_files:
        analysis = analyze_bytes(predictor, path.read_bytes())
        evidence, _ = explain_with_check(predictor, explainer, analysis, method, "PNEUMONIA")
        probability = analysis.prediction.probability
        if path.name.startswith("NORMAL") and probability < 0.05:
            assert evidence.peak < LITTLE_EVIDENCE and evidence.heatmap().max() < LITTLE_EVIDENCE, (path.name, evidence.peak)
        elif path.name.startswith("PNEUMONIA") and probability > 0.95 and method == "gradcam":
            assert evidence.peak >= LITTLE_EVIDENCE, (path.name, evidence.peak)
