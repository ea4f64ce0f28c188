"""The Streamlit app driven headless with AppTest, on the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import encode, make_dicom
from PIL import Image

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT = 120


@pytest.fixture
def app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _upload(at, files):
    """files: list of (name, bytes, mime)."""
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception, at.exception
    return at


def _probability(at) -> float:
    metric = next(m for m in at.metric if m.label == "Pneumonia probability")
    return float(metric.value.rstrip("%")) / 100


def _click_sample(at, index=0):
    buttons = [b for b in at.button if b.key and b.key.startswith("sample_")]
    buttons[index].click().run()
    assert not at.exception, at.exception
    return at


def test_start_page_has_disclaimer_and_samples(app):
    assert any("not for clinical use" in w.value for w in app.warning)
    assert len([b for b in app.button if b.key and b.key.startswith("sample_")]) == 6
    assert not app.error


def test_sample_gives_probability_and_explanation(app):
    _click_sample(app, 3)
    probability = _probability(app)
    assert 0.0 <= probability <= 1.0
    assert any("Faithfulness check" in m.value for m in app.markdown)
    assert len(app.image) >= 2


def _sample_with_undecided_probability(app) -> float:
    """Click through the gallery until a sample's probability leaves room for thresholds on both sides."""
    for index in range(6):
        _click_sample(app, index)
        if any(m.label == "Pneumonia probability" for m in app.metric) and 0.07 < _probability(app) < 0.93:
            return _probability(app)
    raise AssertionError("no gallery sample has a probability between 0.07 and 0.93")


def test_threshold_changes_label_without_recomputing(app, monkeypatch):
    probability = _sample_with_undecided_probability(app)
    import model.analysis as analysis

    def forbidden(*args, **kwargs):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(analysis, "analyze_bytes", forbidden)
    low, high = max(0.01, round(probability - 0.05, 2)), min(0.99, round(probability + 0.05, 2))
    app.slider(key="threshold").set_value(low).run()
    assert any("PNEUMONIA" in e.value for e in app.error) and not app.exception
    sens_low = next(m for m in app.metric if m.label == "Sensitivity").value
    app.slider(key="threshold").set_value(high).run()
    assert any("NORMAL" in s.value for s in app.success) and not app.exception
    sens_high = next(m for m in app.metric if m.label == "Sensitivity").value
    assert float(sens_high.rstrip("%")) <= float(sens_low.rstrip("%"))


def test_preset_buttons_set_the_threshold(app):
    from model.artifact import SHIPPED_MODEL, read_verified_metadata
    from model.operating import threshold_presets

    presets = threshold_presets(read_verified_metadata(SHIPPED_MODEL))
    for name, value in presets.items():
        app.button(key=f"preset_{name}").click().run()
        assert app.slider(key="threshold").value == pytest.approx(round(value, 2))


def test_photograph_is_flagged_and_probability_withheld(app):
    from skimage import data as skdata

    _upload(app, [("cat.jpeg", encode(Image.fromarray(skdata.chelsea()), "JPEG"), "image/jpeg")])
    assert any("Not a chest X-ray" in w.value and "colour photograph" in w.value for w in app.warning)
    assert not any(m.label == "Pneumonia probability" for m in app.metric)
    app.checkbox(key="show_unreliable").check().run()
    assert any(m.label == "Pneumonia probability" for m in app.metric)


def test_png_and_dicom_uploads(app, sample_files):
    pixels = np.asarray(Image.open(sample_files[3]).convert("L")).astype(np.uint16)
    png = encode(Image.fromarray(pixels * 256))  # 16-bit PNG
    _upload(app, [("chest16.png", png, "image/png")])
    assert 0.0 <= _probability(app) <= 1.0
    dicom = make_dicom(4095 - pixels * 16, "MONOCHROME1")
    _upload(app, [("chest.dcm", dicom, "application/dicom")])
    assert 0.0 <= _probability(app) <= 1.0
    rendered = " ".join(str(e.value) for e in list(app.markdown) + list(app.error) + list(app.success))
    assert "Doe" not in rendered and "SECRET-12345" not in rendered


@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"plain text, not an image", "not an image format"),
    ("empty.jpeg", b"", "empty"),
    ("tiny.png", encode(Image.new("L", (4, 4))), "at least"),
])
def test_bad_upload_gives_a_message_not_a_traceback(app, name, data, message):
    _upload(app, [(name, data, "image/png")])
    assert not app.exception
    assert any(message in e.value for e in app.error), [e.value for e in app.error]


def test_batch_upload_table_and_csv(app, sample_files):
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in sample_files[:3]]
    files.append(("broken.jpeg", b"\xff\xd8\xff garbage", "image/jpeg"))
    _upload(app, files)
    table = app.dataframe[0].value
    assert list(table["file"]) == [f[0] for f in files]
    for _, row in table.iloc[:3].iterrows():  # analysed: a probability, or withheld with the reason
        assert 0 <= row["probability"] <= 1 if row["message"] == "" else row["message"].startswith("withheld:")
    assert "damaged" in table["message"].iloc[3] or "not an image" in table["message"].iloc[3]
    assert app.selectbox(key="closer").options == [f[0] for f in files[:3]]
    assert any(m.label == "Pneumonia probability" for m in app.metric)
