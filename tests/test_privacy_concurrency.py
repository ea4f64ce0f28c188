"""Privacy (uploads stay in memory, DICOM patient fields never leak) and concurrent sessions."""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, make_dicom, synthetic_xray
from PIL import Image

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
PATIENT = ("Doe^Jane", "SECRET-12345", "20200101")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
_recording: list | None = None


def _audit(event, args):
    if _recording is None or event != "open":
        return
    path, mode, flags = args
    writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS)
    if writes:
        _recording.append(str(path))


sys.addaudithook(_audit)  # inert unless a test sets _recording


def _probability(at) -> float:
    return float(next(m for m in at.metric if m.label == "Pneumonia probability").value.rstrip("%")) / 100


def _new_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def test_dicom_upload_stays_in_memory_and_patient_fields_never_leak(caplog, capfd):
    global _recording
    at = _new_app()
    dicom = make_dicom(synthetic_xray(21).astype(np.uint16) * 16, patient_name=PATIENT[0])
    files = [("study.dcm", dicom, "application/dicom"), ("other.png", encode(Image.fromarray(synthetic_xray(22))), "image/png")]
    caplog.set_level(logging.DEBUG)
    _recording = []
    try:
        at.file_uploader(key="uploads").set_value(files).run()
        at.selectbox(key="closer").set_value("study.dcm").run()
        written = list(_recording)
    finally:
        _recording = None
    assert not at.exception, at.exception
    assert written == [], f"files were written while processing uploads: {written}"
    captured = capfd.readouterr()
    shown = [str(getattr(e, "value", "")) for e in list(at.markdown) + list(at.error) + list(at.warning) + list(at.success)]
    table = at.dataframe[0].value.to_csv()
    for secret in PATIENT:
        for where, text in (("log", caplog.text), ("stdout", captured.out), ("stderr", captured.err),
                            ("page", " ".join(shown)), ("table/CSV", table)):
            assert secret not in text, f"{secret} leaked into the {where}"


def test_results_csv_has_only_file_names_and_outputs(sample_files):
    from model.analysis import analyze_bytes, results_rows, rows_to_csv
    from model.predictor import Predictor

    predictor = Predictor.load()
    dicom = make_dicom(synthetic_xray(23).astype(np.uint16) * 16, patient_name=PATIENT[0])
    text = rows_to_csv(results_rows([("a.dcm", analyze_bytes(predictor, dicom), None)], 0.5))
    assert text.splitlines()[0] == "file,probability,label,threshold,message"
    assert not any(secret in text for secret in PATIENT)


def test_eight_concurrent_sessions_get_their_own_results(sample_files, monkeypatch):
    from model.analysis import analyze_bytes
    from model.predictor import Predictor

    uploads = [(p.name, p.read_bytes(), "image/jpeg") for p in sample_files]
    pixels = [np.asarray(Image.open(p).convert("L")) for p in sample_files[2:4]]
    uploads += [(f"variant{i}.png", encode(Image.fromarray(np.ascontiguousarray(a[:, ::-1]))), "image/png")
                for i, a in enumerate(pixels)]
    reference = Predictor.load()
    analyses = [analyze_bytes(reference, data) for _, data, _ in uploads]
    expected = [a.probability if a.ood.in_distribution else None for a in analyses]

    loads = []
    original = Predictor.load.__func__
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: loads.append(1) or original(cls, *a, **k)))

    def session(upload):
        at = _new_app()
        at.file_uploader(key="uploads").set_value(upload).run()
        assert not at.exception, at.exception
        if not any(m.label == "Pneumonia probability" for m in at.metric):  # flagged out of distribution
            assert any("Not a chest X-ray" in w.value for w in at.warning)
            return at.subheader[0].value, None
        return at.subheader[0].value, _probability(at)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(session, uploads))
    assert [name for name, _ in results] == [name for name, _, _ in uploads]
    for (_, shown), want in zip(results, expected):
        assert (shown is None) == (want is None)
        if want is not None:
            assert shown == pytest.approx(want, abs=0.0006)  # the page shows one decimal of a percentage
    assert len(loads) <= 1, "the model was loaded more than once"
