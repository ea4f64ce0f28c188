"""At least 20 kinds of bad or awkward input: each gets a specific message (or is analysed), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hardening_corpus import build_corpus


@pytest.fixture(scope="module")
def corpus(sample_files):
    return build_corpus(sample_files[0].read_bytes())


def test_corpus_is_broad(corpus):
    assert len(corpus) >= 20
    assert sum(kind == "error" for _, _, (kind, _) in corpus.values()) >= 10


def test_every_input_through_the_cli(corpus, tiny_model, tmp_path, capsys):
    from model.__main__ import main

    paths = {}
    for name, (file_name, data, _) in corpus.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / file_name).write_bytes(data)
        paths[name] = folder / file_name
    status = main(["predict", "--model", str(tiny_model), *map(str, paths.values())])
    lines = {json.loads(line)["file"]: json.loads(line) for line in capsys.readouterr().out.splitlines()}
    assert status == 1  # some files failed, the others still ran
    for name, (_, _, (kind, text)) in corpus.items():
        line = lines[str(paths[name])]
        if kind == "error":
            assert text in line["error"], (name, line)
        else:
            assert 0.0 <= line["probability"] <= 1.0, (name, line)
        if kind == "ood":
            assert text in line["ood"]["reasons"], (name, line)
        if kind == "ok":
            assert not {"colour", "blank"} & set(line["ood"]["reasons"]), (name, line)


def test_every_input_through_the_app(corpus):
    """The whole corpus as batch uploads: each file gets its row and message, the page no traceback."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    # No extension filter: each file is identified by its content, whatever its name.
    assert not at.file_uploader(key="uploads").allowed_type
    cases = list(corpus.items())
    for start in range(0, len(cases), 25):  # batches within the app's limit of files at once
        batch = cases[start:start + 25]
        files = [(name, data, "application/octet-stream") for _, (name, data, _) in batch]
        at.file_uploader(key="uploads").set_value(files).run()
        assert not at.exception, at.exception
        rows = at.dataframe[0].value.to_dict("records")
        assert [row["file"] for row in rows] == [f"{i}. {name}" for i, (name, _, _) in enumerate(
            (case for _, case in batch), start=1)]
        _check_rows(batch, rows)


def _check_rows(batch, rows) -> None:
    for (name, (_, _, (kind, text))), row in zip(batch, rows):
        if kind == "error":
            assert row["result"] == "not analysed" and text in row["note"], (name, row)
        elif kind == "ood":
            assert row["result"] == "withheld" and row["note"].startswith("outside what the model knows"), (name, row)
        else:  # analysed: a label and probability, or withheld for a stated reason
            label, *probability = row["result"].split()
            assert row["result"] == "withheld" or (label in ("NORMAL", "PNEUMONIA") and 0 <= float(probability[0]) <= 1), (name, row)


def test_huge_scans_are_decoded_at_bounded_size():
    import numpy as np
    from conftest import encode
    from PIL import Image

    from model.pixels import WORKING_MAX_SIDE
    from model.preprocessing import prepare

    big_jpeg = encode(Image.new("L", (9000, 7000), 90), "JPEG")  # 63 MP: decoded at reduced scale (draft)
    big_png16 = encode(Image.fromarray(np.full((6000, 5000), 30000, np.uint16)))  # no draft for PNG: area-shrunk
    for data in (big_jpeg, big_png16):
        assert max(prepare(data).gray.shape) <= WORKING_MAX_SIDE


def test_no_child_process_while_decoding(corpus, started_processes):
    """Nothing a decoder does may start a program (Pillow's EPS plugin would run Ghostscript): every way to start one
    is made to fail loudly, and the whole corpus is decoded."""
    from model.preprocessing import ImageInputError, prepare

    started = started_processes
    for name, (_, data, (kind, _)) in corpus.items():
        try:
            prepare(data)
        except ImageInputError:
            assert kind == "error", name
    assert started == []


def test_markup_in_a_header_is_never_echoed(corpus):
    from model.preprocessing import ImageInputError, prepare

    with pytest.raises(ImageInputError) as err:
        prepare(corpus["dicom_markup_in_header"][1])
    assert not [t for t in ("**", "http", "[", "](") if t in str(err.value)], str(err.value)


def test_palette_color_dicom_is_mapped_through_its_palette(corpus):
    import numpy as np
    from conftest import synthetic_xray

    from model.preprocessing import prepare

    gray = prepare(corpus["dicom_palette_color"][1]).gray.astype(float)
    # The file stores 255 - x through an inverting palette: read through it, the image is x again (not its negative).
    assert np.corrcoef(gray.ravel(), synthetic_xray(36).astype(float).ravel())[0, 1] > 0.9


def test_markup_and_null_bytes_in_the_app():
    """A decoder message is shown as plain text (escaped markdown), and a crafted name with a null byte gets the
    app's own message, not Streamlit's error."""
    from hardening_corpus import _markup_syntax_dicom
    from streamlit.testing.v1 import AppTest

    from app.streamlit_app import plain

    assert plain("**b** [l](http://x) ![i](http://y) $x$") == (
        r"\*\*b\*\* \[l\]\(http\:\/\/x\) \!\[i\]\(http\:\/\/y\) \$x\$".replace(r"\/", "/"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.file_uploader(key="uploads").set_value([("markup.dcm", _markup_syntax_dicom(), "application/dicom")]).run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert "unknown transfer syntax" in shown and "http" not in shown and "**" not in shown
    at.file_uploader(key="uploads").set_value([("ch\0est.png", b"\x89PNG", "image/png")]).run()
    assert not at.exception, at.exception
    assert any("null byte" in e.value for e in at.error)
