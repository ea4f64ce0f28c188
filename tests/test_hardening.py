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
    """The whole corpus as one batch upload: each file gets its row and message, the page no traceback."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    # The browser refuses other extensions before upload (Streamlit's own message); AppTest bypasses
    # that filter, so such files are sent renamed, as a user who renamed them would.
    allowed = {f".{t}" for t in at.file_uploader(key="uploads").allowed_type} | set(at.file_uploader(key="uploads").allowed_type)
    names = [n if Path(n).suffix in allowed else f"{n}.png" for n, _, _ in corpus.values()]
    files = [(name, data, "application/octet-stream") for name, (_, data, _) in zip(names, corpus.values())]
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception, at.exception
    rows = at.dataframe[0].value.to_dict("records")
    assert [row["file"] for row in rows] == [f"{i}. {name}" for i, name in enumerate(names, start=1)]
    for (name, (_, _, (kind, text))), row in zip(corpus.items(), rows):
        if kind == "error":
            assert row["result"] == "not analysed" and text in row["note"], (name, row)
        elif kind == "ood":
            assert row["result"] == "withheld" and row["note"].startswith("flagged by the gate"), (name, row)
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
