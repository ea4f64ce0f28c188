"""``python -m model predict``: JSON lines, per-file errors, exit codes, no silent untrained model."""

from __future__ import annotations

import json

import pytest

from model.__main__ import main


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]


def test_good_and_bad_files(tiny_model, sample_files, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    missing = tmp_path / "missing.jpeg"
    files = [str(sample_files[0]), str(bad), str(missing), str(sample_files[-1])]
    status = main(["predict", "--model", str(tiny_model), *files])
    lines = _lines(capsys)
    assert status == 1
    assert [line["file"] for line in lines] == files
    for line in (lines[0], lines[3]):
        assert {"file", "probability", "label", "threshold", "reliable", "reason", "trust", "map_check", "ood"} <= set(line) <= \
            {"file", "probability", "label", "threshold", "reliable", "reason", "trust", "map_check", "ood", "warning", "cautions"}
        assert line["map_check"] is None  # not asked for
        assert set(line["ood"]) == {"in_distribution", "reason", "reasons", "distance_ratio", "population_ratio",
                                    "near_limit", "message"}
        assert line["reliable"] == line["ood"]["in_distribution"]
        assert ("warning" in line) == (not line["reliable"])  # a flagged image never looks like a normal result
        if "warning" in line:
            assert line["warning"].startswith("UNRELIABLE")
        assert 0.0 <= line["probability"] <= 1.0 and line["label"] in ("NORMAL", "PNEUMONIA")
        assert line["label"] == ("PNEUMONIA" if line["probability"] >= line["threshold"] else "NORMAL")
    assert "not an image we can read" in lines[1]["error"]
    assert "cannot read the file" in lines[2]["error"]


def test_check_map_gives_the_apps_own_trust_verdict(sample_files, capsys):
    """--check-map: the trust verdict checks the map the app shows first, for the call's own class, like the page."""
    from model.explain import CAM_METHODS, CamExplainer
    from model.predictor import Predictor
    from model.service import analyze_bytes, explain_with_check, shown_first

    path = sample_files[3]
    assert main(["predict", "--check-map", str(path)]) == 0
    line = _lines(capsys)[0]
    predictor = Predictor.load()
    analysis = analyze_bytes(predictor, path.read_bytes())
    first = shown_first(predictor.metadata)
    _, check = explain_with_check(predictor, CamExplainer.for_predictor(predictor), analysis, first, line["label"])
    assert first in CAM_METHODS and line["map_check"] == {"method": first, "verdict": check.verdict}
    assert (line["trust"] == "caution") == bool(line.get("cautions"))
    assert ("heatmap check failed" in " ".join(line.get("cautions", [])).lower()) == (check.verdict == "does not support")


def test_threshold_option_sets_the_label(tiny_model, sample_files, capsys):
    assert main(["predict", "--model", str(tiny_model), "--threshold", "0.000001", str(sample_files[0])]) == 0
    assert _lines(capsys)[0]["label"] == "PNEUMONIA"
    assert main(["predict", "--model", str(tiny_model), "--threshold", "0.999999", str(sample_files[0])]) == 0
    assert _lines(capsys)[0]["label"] == "NORMAL"


@pytest.mark.parametrize("threshold", ["0", "1.5"])
def test_invalid_threshold(tiny_model, sample_files, capsys, threshold):
    assert main(["predict", "--model", str(tiny_model), "--threshold", threshold, str(sample_files[0])]) == 2
    assert "threshold" in _lines(capsys)[0]["error"]


def test_missing_model_is_reported_not_replaced(tmp_path, sample_files, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.keras"), str(sample_files[0])]) == 2
    assert "not found" in _lines(capsys)[0]["error"]


def test_non_regular_and_oversized_files_are_skipped_unread(tiny_model, sample_files, tmp_path, capsys, monkeypatch):
    """A FIFO (no writer: reading would hang), /dev/zero (endless), a directory and a file over the limit each get an
    error line without being read, and the files after them still run."""
    import os

    import model.preprocessing as preprocessing

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(200_000))
    monkeypatch.setattr(preprocessing, "MAX_FILE_BYTES", 100_000)  # stands for 200 MB: the size is checked with fstat
    files = [str(fifo), "/dev/zero", str(tmp_path), str(big), str(sample_files[0])]
    assert main(["predict", "--model", str(tiny_model), *files]) == 1
    lines = _lines(capsys)
    assert [line["file"] for line in lines] == files
    assert "not a regular file" in lines[0]["error"] and "not a regular file" in lines[1]["error"]
    assert "directory" in lines[2]["error"]
    assert "larger than" in lines[3]["error"]
    assert 0.0 <= lines[4]["probability"] <= 1.0
