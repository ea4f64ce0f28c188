"""The Streamlit app driven headless with AppTest, on the shipped model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, make_dicom, synthetic_xray
from PIL import Image

from model.ood import HEADLINE

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT = 120
PROBABILITY = "Pneumonia probability"


@pytest.fixture
def app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def shipped_meta():
    from model.artifact import SHIPPED_MODEL, read_verified_metadata

    return read_verified_metadata(SHIPPED_MODEL)


def _upload(at, files):
    """files: list of (name, bytes, mime)."""
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception, at.exception
    return at


def _probability(at) -> float:
    metric = next(m for m in at.metric if m.label.startswith(PROBABILITY))
    return float(metric.value.rstrip("%")) / 100


def _metric(at, label) -> float:
    return float(next(m for m in at.metric if m.label.startswith(label)).value.rstrip("%")) / 100


def _pick_sample(at, index=0):
    at.button(key=f"sample_{index}").click().run()
    assert not at.exception, at.exception
    return at


def _markdown_text(at) -> str:
    elements = list(at.markdown) + list(at.error) + list(at.warning) + list(at.success) + list(at.info) + list(at.caption)
    return " ".join(str(e.value) for e in elements) + " ".join(s.value for s in at.subheader)


def test_start_page_has_disclaimer_and_a_compact_gallery(app):
    assert any("not for clinical use" in w.value for w in app.warning)
    assert len([b for b in app.button if b.key.startswith("sample_")]) == 6  # one button under each thumbnail
    assert len(app.tabs[0].image) == 6
    assert not app.error


def _call(app) -> str:
    return "PNEUMONIA" if any(e.value.startswith("**PNEUMONIA** at threshold") for e in app.error) else "NORMAL"


def test_the_map_shown_first_is_the_models_choice_for_the_calls_own_class(app, shipped_meta):
    from model.explain import CAM_METHODS
    from model.service import shown_first

    for index in (0, 3):  # a normal and a pneumonia sample
        _pick_sample(app, index)
        assert 0.0 <= _probability(app) <= 1.0
        label, first = _call(app), shown_first(shipped_meta)
        assert app.radio(key="cam_which").value == "call" and app.selectbox(key="method").value == first
        assert app.selectbox(key="method").options[0] == f"{CAM_METHODS[first].label} (shown first)"
        assert app.radio(key="cam_which").options[0] == f"the call ({label.lower()})"
        assert any("Does the map explain the output?" in s.value for s in list(app.success) + list(app.warning) + list(app.error))
    assert any("Colour scale" in c.value for c in app.caption)
    assert len(app.tabs[0].image) >= 3  # overlay, colour bar, what the network saw
    app.radio(key="cam_which").set_value("other").run()
    other = "normal" if _call(app) == "PNEUMONIA" else "pneumonia"
    assert not app.exception and any(f"evidence for {other}" in c.value for c in app.caption)
    text = _markdown_text(app)
    assert "Does this map explain what it shows?" in text and "checks the map shown first" in text


def _least_certain_sample(app) -> float:
    """Leave the app on the gallery sample whose probability is nearest 0.5, and return that probability."""
    probabilities = {}
    for index in range(6):
        _pick_sample(app, index)
        if any(m.label == PROBABILITY for m in app.metric):
            probabilities[index] = _probability(app)
    index = min(probabilities, key=lambda i: abs(probabilities[i] - 0.5))
    _pick_sample(app, index)
    assert 0.004 < probabilities[index] < 0.996, probabilities
    return probabilities[index]


def test_threshold_changes_label_without_recomputing(app, monkeypatch):
    probability = _least_certain_sample(app)
    import model.service as analysis

    def forbidden(*args, **kwargs):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(analysis, "analyze_bytes", forbidden)
    low, high = round(probability / 2, 3), round((1 + probability) / 2, 3)  # halfway to 0 and to 1
    app.slider(key="threshold_slider").set_value(low).run()
    assert any("PNEUMONIA" in e.value for e in app.error) and not app.exception
    sens_low = _metric(app, "Sensitivity")
    app.slider(key="threshold_slider").set_value(high).run()
    assert any("NORMAL" in s.value for s in app.success) and not app.exception
    assert _metric(app, "Sensitivity") <= sens_low


def test_presets_set_exactly_the_models_thresholds(app, shipped_meta):
    _pick_sample(app, 0)
    for value, names in shipped_meta.thresholds.by_value().items():
        app.button(key=f"preset_{names[0]}").click().run()
        assert app.session_state.threshold == value  # exact: the CLI uses the same number
        assert app.slider(key="threshold_slider").value == value
        assert f"{value:.3f}" in " ".join(e.value for e in list(app.error) + list(app.success))


def test_readout_is_the_held_out_operating_point(app, shipped_meta):
    from model.operating_point import DEFAULT_PREVALENCE, operating_point

    _pick_sample(app, 0)
    threshold = app.session_state.threshold
    point = operating_point(shipped_meta, threshold, DEFAULT_PREVALENCE)
    assert _metric(app, "Sensitivity") == pytest.approx(point.sensitivity, abs=0.001)
    assert _metric(app, "Specificity") == pytest.approx(point.specificity, abs=0.001)
    caption = " ".join(c.value for c in app.caption)
    assert point.source in caption
    if (shipped_meta.metrics.test or {}).get("scores"):
        assert point.held_out and "official test split" in caption
    assert any(m.label == f"PPV at {DEFAULT_PREVALENCE:.0%}" for m in app.metric)


def test_photograph_is_flagged_with_reason_and_show_anyway_is_marked(app):
    from skimage import data as skdata

    _upload(app, [("cat.jpeg", encode(Image.fromarray(skdata.chelsea()), "JPEG"), "image/jpeg")])
    warning = " ".join(w.value for w in app.error)
    assert "Outside what this model knows" in warning and "in colour" in warning
    assert not any(m.label.startswith(PROBABILITY) for m in app.metric)
    next(c for c in app.checkbox if c.key.startswith("show_anyway_")).check().run()
    assert any(m.label == f"{PROBABILITY} (unreliable)" for m in app.metric)
    assert any("Do not rely on this result" in e.value and "because you asked for it" in e.value for e in app.error)


def test_shown_anyway_output_is_styled_as_unreliable_throughout(app):
    """Shown against the gate's advice: no green or red call box, 'not a diagnosis of this image' under the number,
    the output in a neutral box, the map's check in a neutral box, and the threshold figures said not to apply."""
    from skimage import data as skdata

    _upload(app, [("cat.jpeg", encode(Image.fromarray(skdata.chelsea()), "JPEG"), "image/jpeg")])
    next(c for c in app.checkbox if c.key.startswith("show_anyway_")).check().run()
    assert not app.exception
    assert not any("at threshold" in str(e.value) for e in list(app.success) + list(app.error))  # no call colour
    assert not app.success  # nothing green anywhere on the page
    shown = next(w for w in app.warning if "Shown anyway" in w.value)
    assert "not a diagnosis of this image" in shown.value and "**" not in shown.value and shown.icon == ":material/report:"
    metric = app.tabs[0].metric[0]
    assert metric.label == f"{PROBABILITY} (unreliable)"
    assert "Unreliable: not a diagnosis of this image." in [c.value for c in app.caption]
    check = next(i for i in app.info if "Does the map explain the output?" in i.value)  # neutral, not a verdict colour
    assert check.value and not any("Does the map explain" in str(e.value) for e in list(app.error) + list(app.warning))
    assert any("They say nothing about this image" in c.value for c in app.caption)


def test_an_empty_map_is_said_to_be_empty(app):
    """Grad-CAM++'s evidence for pneumonia on a confident normal film is empty on the fixed scale: the page says the
    method found no evidence to show, never 'reaches only 0 %' or 'the bright areas are not what drives it'."""
    _pick_sample(app, 0)
    assert app.button(key="sample_0").proto.icon == ":material/check:"  # the chosen sample: an icon, not an emoji
    assert not app.button(key="sample_1").proto.icon
    app.radio(key="cam_which").set_value("other").run()  # the normal film's evidence for pneumonia
    app.selectbox(key="method").set_value("gradcam++").run()
    assert not app.exception
    text = _markdown_text(app)
    assert "Grad-CAM++ found no evidence for pneumonia to show in this image: its map is empty" in text
    assert "Nothing to check: the map highlights no area" in text
    assert "reaches only 0%" not in text and "0% of full colour" not in text and "bright areas" not in text
    app.toggle(key="per_image").set_value(True).run()
    text = _markdown_text(app)
    assert "found no evidence for pneumonia" in text and "the colours you see are not evidence" in text
    app.toggle(key="per_image").set_value(False).run()
    app.selectbox(key="method").set_value("gradcam").run()  # Grad-CAM's map of the same film is weak, not empty
    assert "Little evidence for pneumonia anywhere in this image" in _markdown_text(app)


def test_a_threshold_at_the_edge_says_what_it_does_on_the_test_split(app, shipped_meta):
    from model.operating_point import DEFAULT_PREVALENCE, operating_point

    _pick_sample(app, 0)  # a normal film at about 0.6 %
    assert not any("edge of the range" in w.value for w in app.warning)  # the default threshold is not at the edge
    app.slider(key="threshold_slider").set_value(0.001).run()
    point = operating_point(shipped_meta, 0.001, DEFAULT_PREVALENCE)
    note = next(w.value for w in app.warning if "is at the edge of the range" in w.value)
    assert f"specificity {point.specificity:.1%}" in note and "official test split" in note
    assert "calls almost every X-ray PNEUMONIA" in note  # the test split's figure, not a fixed text
    trust = next(w.value for w in app.warning if w.value.startswith("**Read with caution"))
    assert "edge of its range" in trust and "says little about this image" in trust
    assert not any("not borderline" in str(e.value) for e in list(app.info) + list(app.warning))


def test_the_prevalence_default_is_said_once_with_why(app):
    from model.operating_point import DEFAULT_PREVALENCE

    _pick_sample(app, 0)
    box = app.number_input(key="prevalence_input")
    assert box.value == round(DEFAULT_PREVALENCE * 100)
    assert "starts at" not in box.help and "by default" not in box.help  # the help says the range, not a default
    tab = app.tabs[0]  # the Analyse tab (the model card says "by default" of the heatmap method)
    everything = " ".join(str(e.value) for e in [*tab.markdown, *tab.caption, *tab.info, *tab.warning]) + box.help
    assert everything.count("by default") == 1 and f"{DEFAULT_PREVALENCE:.0%} by default" in everything
    assert "because pneumonia is suspected" in everything  # and why


def test_no_emoji_alone_carries_a_meaning():
    """Emoji render as empty boxes without an emoji font (Debian's chromium, locked-down PCs): icons are Material
    icons and every meaning is in words."""
    root = Path(APP).parents[1]
    emoji = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")
    for path in (root / "app" / "streamlit_app.py", root / "model" / "report.py", root / "model" / "visitor_card.py"):
        found = emoji.findall(path.read_text())
        assert not found, (path.name, found)


def test_the_model_card_opens_with_the_visitors_card_and_keeps_the_technical_one(app, shipped_meta):
    card = app.tabs[1]
    first = card.markdown[0].value
    assert first.startswith("**What it is for.**")
    text = " ".join(m.value for m in card.markdown)
    assert f"{shipped_meta.metrics.test['roc_auc']:.0%} of the time" in text
    assert "setting | finds pneumonia | clears normal" in text  # the one small table
    assert all(heading in text for heading in ("**How good it is.**", "**What it refuses.**", "**The heatmap.**"))
    technical = next(e for e in card.expander if e.label == "The full technical model card")
    full = (Path(APP).parents[1] / "model" / "MODEL_CARD.md").read_text()
    assert any(m.value.strip() == full.strip() for m in technical.markdown)  # the technical card, unchanged
    assert any(i.value.startswith("**In short.**") for i in technical.info)


def test_show_anyway_is_per_file(app):
    from skimage import data as skdata

    photos = [("cat.jpeg", encode(Image.fromarray(skdata.chelsea()), "JPEG"), "image/jpeg"),
              ("coffee.jpeg", encode(Image.fromarray(skdata.coffee()), "JPEG"), "image/jpeg")]
    _upload(app, photos)
    next(c for c in app.checkbox if c.key.startswith("show_anyway_1_")).check().run()
    assert any(m.label.endswith("(unreliable)") for m in app.metric)
    rows = app.dataframe[0].value.to_dict("records")
    assert "(unreliable)" in rows[0]["result"] and "in colour" in rows[0]["note"]
    app.selectbox(key="closer").set_value(app.selectbox(key="closer").options[1]).run()
    box = next(c for c in app.checkbox if c.key.startswith("show_anyway_2_"))
    assert not box.value and not any(m.label.startswith(PROBABILITY) for m in app.metric)
    rows = app.dataframe[0].value.to_dict("records")
    assert rows[1]["result"] == "withheld" and rows[1]["note"] == "outside what the model knows: in colour, not an X-ray"


def test_png_and_dicom_uploads(app, sample_files):
    pixels = np.asarray(Image.open(sample_files[3]).convert("L")).astype(np.uint16)
    png = encode(Image.fromarray(pixels * 256))  # 16-bit PNG
    _upload(app, [("chest16.png", png, "image/png")])
    assert 0.0 <= _probability(app) <= 1.0
    dicom = make_dicom(4095 - pixels * 16, "MONOCHROME1")
    _upload(app, [("chest.dcm", dicom, "application/dicom")])
    assert 0.0 <= _probability(app) <= 1.0
    rendered = _markdown_text(app) + " ".join(t.value for t in app.text)
    assert not re.search(r"\bDoe\b|Jane", rendered) and "SECRET-12345" not in rendered  # "Does the map..." is fine


@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"plain text, not an image", "not an image we can read"),
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
    assert list(table["file"]) == [f"{i}. {f[0]}" for i, f in enumerate(files, start=1)]
    assert "None" not in table.to_csv()
    for _, row in table.iloc[:3].iterrows():  # analysed: a label and probability, or withheld with the reason
        assert row["result"].split()[0] in ("NORMAL", "PNEUMONIA") or row["note"].startswith("outside what the model knows")
    assert table["result"].iloc[3] == "not analysed"
    assert "damaged" in table["note"].iloc[3] or "not an image" in table["note"].iloc[3]
    assert app.selectbox(key="closer").options == [f"{i}. {f[0]}" for i, f in enumerate(files, start=1)]
    assert any(t.value == f"File: {files[0][0]}" for t in app.text)  # the first of the batch is shown
    assert any(m.label.startswith(PROBABILITY) for m in app.metric)


def test_duplicate_names_are_told_apart(app, sample_files):
    """Two different X-rays both named scan.png: each keeps its own result, in the table and the closer look."""
    normal, pneumonia = sample_files[0].read_bytes(), sample_files[3].read_bytes()
    _upload(app, [("scan.png", normal, "image/png"), ("scan.png", pneumonia, "image/png")])
    rows = app.dataframe[0].value.to_dict("records")
    closer = app.selectbox(key="closer")
    assert closer.options == ["1. scan.png", "2. scan.png"]
    first = _probability(app)
    closer.set_value(closer.options[1]).run()
    second = _probability(app)
    assert first != second
    shown = [float(r["result"].split()[1]) for r in rows]
    assert shown[0] == pytest.approx(first, abs=0.001) and shown[1] == pytest.approx(second, abs=0.001)


def test_file_names_are_plain_text_never_markup(app):
    name = ":green-background[NORMAL: safe to discharge] **bold** $x^2$ ![i](http://example.invalid/p.png).png"
    _upload(app, [(name, encode(Image.fromarray(synthetic_xray(3))), "image/png")])
    assert any(name in t.value for t in app.text)  # shown verbatim, as plain text
    assert "green-background" not in _markdown_text(app)  # never handed to a markdown renderer
    _upload(app, [(name, b"not an image", "image/png")])
    assert "green-background" not in _markdown_text(app) and any(name in t.value for t in app.text)


def test_batch_limits(app):
    png = encode(Image.fromarray(synthetic_xray(4)))
    files = [(f"x{i}.png", png, "image/png") for i in range(52)]
    _upload(app, files)
    assert any("at most 50 files" in e.value for e in app.error)
    assert len(app.dataframe[0].value) == 50


def test_the_newest_upload_is_the_one_shown(app, sample_files):
    """One file at a time: each new upload replaces the result shown, with no table; the shown file is named."""
    first_file = (sample_files[0].name, sample_files[0].read_bytes(), "image/jpeg")
    _upload(app, [first_file])
    first = _probability(app)
    assert any(t.value == f"File: {sample_files[0].name}" for t in app.text) and not app.dataframe
    # As the browser does it: the first file keeps its upload id, the second is added with a new one
    # (AppTest's own upload() would start again from an empty list after a run).
    uploader = app.file_uploader(key="uploads")
    uploader._files = [(uploader.value[0].file_id, *first_file),
                       ("a-new-upload", sample_files[3].name, sample_files[3].read_bytes(), "image/jpeg")]
    uploader.run()
    assert not app.exception, app.exception
    assert len(app.file_uploader(key="uploads").value) == 2
    assert any(t.value == f"File: {sample_files[3].name}" for t in app.text)  # the new file, not the previous one
    assert _probability(app) != first
    assert not app.dataframe and not app.toggle(key="show_table").value  # one new file: no table until asked
    app.toggle(key="show_table").set_value(True).run()
    assert len(app.dataframe[0].value) == 2


def test_presets_in_threshold_order_with_test_figures_and_the_active_one_marked(app, shipped_meta):
    _pick_sample(app, 0)
    groups = shipped_meta.thresholds.by_value()
    buttons = [b for b in app.button if b.key.startswith("preset_")]
    assert [b.key for b in buttons] == [f"preset_{names[0]}" for names in groups.values()]
    assert [b.label.removesuffix(" (default)") for b in buttons] == [
        " = ".join(n.capitalize() for n in names) for names in groups.values()]  # a shared threshold, one button
    if shipped_meta.model_version == "3":  # v3's confirmatory rule was clamped to balanced's threshold
        assert [b.label for b in buttons] == ["Screening", "Balanced = Confirmatory (default)"]
    default = shipped_meta.thresholds.default
    # the active one is marked by a Material icon and the primary colour, never by an emoji alone (issue 27)
    assert [b.proto.icon == ":material/check:" for b in buttons] == [default in names for names in groups.values()]
    assert [b.proto.type == "primary" for b in buttons] == [default in names for names in groups.values()]
    captions = " ".join(c.value for c in app.caption)
    assert all(f"{value:.3f}: finds" in captions for value in groups)


def test_explanation_is_on_the_fixed_scale_with_a_plain_verdict(app):
    _pick_sample(app, 0)  # a confident normal film
    app.radio(key="cam_which").set_value("other").run()  # its pneumonia map
    app.selectbox(key="method").set_value("gradcam").run()
    text = _markdown_text(app)
    assert "Little evidence for pneumonia anywhere in this image" in text
    assert "right end, as strong as in the top 5 %" in text
    assert "Does this map explain what it shows?" in text and "log-odds" not in " ".join(
        str(e.value) for e in list(app.success) + list(app.warning) + list(app.error))
    app.toggle(key="per_image").set_value(True).run()
    assert "Per-image contrast is on" in _markdown_text(app)


def _verdict(app) -> str:
    boxes = [str(e.value) for e in list(app.error) + list(app.warning) + list(app.info)]
    return next(b for b in boxes if b.startswith(("**Do not rely", "**Read with caution", "**No warning raised")))


def test_the_trust_verdict_does_not_depend_on_the_map_on_display(app):
    """The verdict checks the map shown first, of the call's own class, whatever class or method the visitor shows."""
    _pick_sample(app, 0)
    before = _verdict(app)
    app.radio(key="cam_which").set_value("other").run()
    assert _verdict(app) == before
    app.selectbox(key="method").set_value("gradcam++").run()
    assert _verdict(app) == before
    app.radio(key="cam_which").set_value("call").run()
    assert _verdict(app) == before


def test_the_table_says_what_each_files_own_page_says(app, sample_files):
    """One verdict per file: the table's note names the same reasons as the trust box on that file's page (the
    CSV is written from the same rows: test_model_helpers)."""
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in sample_files]
    _upload(app, files)
    notes = list(app.dataframe[0].value["note"])
    for number, name in enumerate([f[0] for f in files], start=1):
        app.selectbox(key="closer").set_value(f"{number}. {name}").run()
        note = notes[number - 1]
        if note.startswith("outside what the model knows"):  # the page refuses it too, with the gate's reason
            assert any(e.value.startswith(f"**{HEADLINE}") for e in app.error), (name, note)
            continue
        verdict = _verdict(app)
        assert ("heatmap check failed" in note) == ("The heatmap check failed" in verdict), (name, note, verdict)
        assert ("borderline call" in note) == ("Borderline" in verdict), (name, note, verdict)
        assert (note == "") == verdict.startswith("**No warning raised"), (name, note, verdict)


def test_a_spread_occlusion_map_is_not_called_little_evidence(app):
    """On a confident pneumonia film whose evidence is spread, occlusion's strongest single patch is faint on the
    fixed scale: the page says no single patch carries much, not that there is little evidence anywhere."""
    _pick_sample(app, 5)
    assert _call(app) == "PNEUMONIA" and _probability(app) > 0.95
    text = _markdown_text(app)
    assert "No single patch carries much of the evidence for pneumonia" in text
    assert "Little evidence for pneumonia anywhere" not in text
