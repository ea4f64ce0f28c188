"""Privacy: uploads stay in memory, DICOM patient fields never leak (page, table, logs)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
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
