"""At least 20 kinds of bad or awkward input: each gets a specific message (or is analysed), never a traceback."""

from __future__ import annotations

import json

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
