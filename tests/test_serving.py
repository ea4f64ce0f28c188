"""The serving path (app and CLI) runs on LiteRT and never imports TensorFlow: that is what keeps it small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_SERVE = """
import sys

import numpy as np
import importlib.abc

if "--without-training-stack" in sys.argv:  # as if only requirements.txt were installed
    class _NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "keras", "tf_keras_vis", "sklearn", "skimage", "tf_keras"}:
                raise ModuleNotFoundError(f"No module named {name!r} (not in requirements.txt)")
    sys.meta_path.insert(0, _NotInstalled())

from model.service import analyze_bytes, explain_with_check
from model.explain import CamExplainer, overlay_heatmap
from model.operating_point import operating_point
from model.predictor import Predictor
from model.report import ReportContent, render_report
predictor = Predictor.load(sys.argv[1])
explainer = CamExplainer.for_predictor(predictor)
analysis = analyze_bytes(predictor, open(sys.argv[2], "rb").read())
evidence, check = explain_with_check(predictor, explainer, analysis, "gradcam++", "PNEUMONIA")
overlay = overlay_heatmap(analysis.display, evidence.heatmap())
p = analysis.prediction
point = operating_point(predictor.metadata, 0.5, 0.2)
render_report(ReportContent("x.png", analysis.display, overlay, "Grad-CAM++", p.probability, p.label(0.5), point,
                            predictor.metadata, "accepted", faithfulness=check), "pdf")
print(round(p.probability, 6), sorted(m for m in ("tensorflow", "keras", "sklearn") if m in sys.modules))
"""


def test_serving_path_never_imports_tensorflow(tiny_model, sample_files):
    result = subprocess.run([sys.executable, "-c", _SERVE, str(tiny_model), str(sample_files[0])], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    probability, imported = result.stdout.strip().split(" ", 1)
    assert 0.0 <= float(probability) <= 1.0
    assert imported == "[]"


def test_serving_runs_with_the_training_stack_uninstalled(sample_files):
    """requirements.txt alone (no TensorFlow, Keras, tf-keras-vis, scikit-learn) serves the shipped model."""
    result = subprocess.run([sys.executable, "-c", _SERVE, "model/shipped/pneumonia_efficientnet_lite0.keras",
                             str(sample_files[0]), "--without-training-stack"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("[]")


def test_cli_runs_without_tensorflow(sample_files):
    code = ("import sys, runpy; sys.argv = ['model', 'predict', sys.argv[1]]\n"
            "try:\n    runpy.run_module('model', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TF', 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(sample_files[0])], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"probability"' in result.stdout and result.stdout.strip().endswith("TF False")


def test_shipped_export_serves_the_shipped_keras_model(sample_files):
    """The metrics were computed on the .tflite; the .keras is what training produced: they must agree."""
    from model.artifact import SHIPPED_MODEL, load_model
    from model.forward_pass import keras_forward
    from model.predictor import Predictor
    from model.preprocessing import prepare

    predictor = Predictor.load()
    keras_model, meta = load_model(SHIPPED_MODEL)
    images = np.stack([prepare(path.read_bytes(), meta.preprocessing).model_input for path in sample_files])
    served, reference = predictor.predict(images).raw, keras_forward(keras_model, meta.network)(images)
    np.testing.assert_allclose(served.logits, reference.logits, atol=1e-3)
    np.testing.assert_allclose(served.features, reference.features, atol=1e-3)
