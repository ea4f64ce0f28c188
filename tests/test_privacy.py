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
        at.selectbox(key="closer").set_value("1. study.dcm").run()
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
    from model.predictor import Predictor
    from model.service import BatchItem, analyze_bytes, results_rows, rows_to_csv

    predictor = Predictor.load()
    dicom = make_dicom(synthetic_xray(23).astype(np.uint16) * 16, patient_name=PATIENT[0])
    text = rows_to_csv(results_rows([BatchItem(1, "a.dcm", analyze_bytes(predictor, dicom).prediction, None)], 0.5))
    assert text.splitlines()[0] == "#,file,result,probability,label,threshold,reliable,trust,gate,message"
    assert not any(secret in text for secret in PATIENT)


def test_csv_cells_cannot_run_as_formulas_and_download_names_are_safe():
    from model.service import BatchItem, results_rows, rows_to_csv, safe_download_name

    rows = results_rows([BatchItem(1, "=HYPERLINK(\"http://x\")", None, "damaged"), BatchItem(2, "@SUM(A1).png", None, "x")], 0.5)
    import csv
    import io

    cells = list(csv.reader(io.StringIO(rows_to_csv(rows))))
    assert cells[1][1].startswith("'=HYPERLINK") and cells[2][1].startswith("'@SUM")
    long_name = ":green-background[NORMAL] ../../etc/passwd " + "x" * 300 + ".png"
    safe = safe_download_name(long_name, "_report.pdf")
    assert len(safe) <= 100 and safe.endswith("_report.pdf") and "/" not in safe and "[" not in safe and " " not in safe


def test_large_uploads_are_parsed_in_memory():
    """Starlette spools multipart parts over 1 MB to a temporary file unless the app raises its limit."""
    import asyncio

    from starlette.requests import Request

    from app.server_config import keep_uploads_in_memory

    keep_uploads_in_memory(50)
    boundary = "xrayboundary"
    payload = os.urandom(5 * 2**20)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.dcm\"\r\n"
            "Content-Type: application/dicom\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def parse():
        form = await Request(scope, receive).form()
        upload = form["file"]
        return await upload.read(), upload.file._rolled

    global _recording
    _recording = []
    try:
        data, rolled = asyncio.run(parse())
        written = list(_recording)
    finally:
        _recording = None
    assert data == payload and not rolled
    assert written == []
