"""Issue 26 (hostile input, round four): each class with a small generated file, built here."""

from __future__ import annotations

import importlib
import os

import pytest


def test_server_config_finds_libc_without_a_child_process(monkeypatch, started_processes):
    """Item 11: ctypes.util.find_library("c") ran ``ldconfig -p``; the C library is opened by soname instead."""
    from app import server_config

    started = started_processes
    reloaded = importlib.reload(server_config)
    assert started == []
    if os.path.exists("/proc/self/maps") and "libc.so.6" in open("/proc/self/maps").read():
        assert reloaded._LIBC is not None and hasattr(reloaded._LIBC, "malloc_trim")
    monkeypatch.setattr(reloaded, "LIBC_SONAME", "libc-that-does-not-exist.so.99")
    assert reloaded._glibc() is not None  # falls back to the symbols already loaded, still without a process
    assert started == []
    reloaded.release_freed_memory()


def _peak_python_mb(fn, *args):
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak / 2**20


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_is_read_without_re_encoding_the_exif_block(fmt):
    """Item 1: a 2 MB EXIF block of private SHORTs beside Orientation 6 was re-serialised tag by tag (15 million values
    took 2.6 GB and 20 s); the orientation is now read alone and applied to the decoded pixels."""
    from hostile4_corpus import exif_bomb

    from model.preprocessing import colour_preview, prepare

    data = exif_bomb(1_000_000, orientation=6, size=(96, 64), fmt=fmt)
    prepared, peak_mb = _peak_python_mb(prepare, data)
    assert peak_mb < 20, peak_mb  # re-encoding the block took about 170 MB here
    gray = prepared.gray
    assert gray.shape == (96, 64)  # 96 wide, 64 high as stored; rotated 90° clockwise for display
    assert gray[:10, -10:].mean() > 200 and gray[-10:, :10].mean() < 50  # the white corner moved to the top right
    preview = colour_preview(data, 64)  # None for a grey PNG; WebP decodes as RGB, shown turned the same way
    assert preview is None or (preview.shape[:2] == (64, 43) and preview[:5, -5:].mean() > 200)


def test_every_exif_orientation_matches_pillow():
    import numpy as np
    from PIL import Image

    from model.preprocessing import orient

    pixels = np.arange(12 * 7 * 3, dtype=np.uint8).reshape(12, 7, 3)
    for orientation in range(1, 9):
        method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                  5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}.get(orientation)
        expected = np.asarray(Image.fromarray(pixels).transpose(method)) if method is not None else pixels
        np.testing.assert_array_equal(orient(pixels, orientation), expected)


@pytest.mark.parametrize("tiles", [False, True])
def test_tiff_strip_or_tile_table_longer_than_the_image_needs_is_refused_before_opening(tiles):
    """Item 2: 7 million StripOffsets in a 512-row TIFF took 2.2 GB while Pillow opened it; refused from the header."""
    from hostile4_corpus import tiff_with_table

    from model.preprocessing import ImageInputError, colour_preview, prepare

    data = tiff_with_table(300_000, tiles=tiles)
    with pytest.raises(ImageInputError, match=f"lists 300000 {'tiles' if tiles else 'strips'}.*512×512"):
        _peak_python_mb(prepare, data)
    assert colour_preview(data, 64) is None


def test_tiff_tables_that_fit_the_image_are_read():
    import io

    import numpy as np
    from conftest import encode, synthetic_xray
    from hostile4_corpus import tiff_with_table
    from PIL import Image

    from model.preprocessing import ImageInputError, check_tiff_header, prepare

    assert prepare(tiff_with_table(512)).gray.shape == (512, 512)  # one row per strip: the most a 512-row image needs
    xray = synthetic_xray(3)
    for image in (Image.fromarray(xray), Image.fromarray(xray.astype(np.uint16) * 200)):
        for options in ({}, {"compression": "tiff_deflate"}, {"compression": "tiff_lzw"}):
            assert prepare(encode(image, "TIFF", **options)).gray.shape == xray.shape
    buffer = io.BytesIO()
    Image.fromarray(xray).convert("RGB").save(buffer, "TIFF", tiffinfo={}, compression="tiff_adobe_deflate")
    check_tiff_header(buffer.getvalue())
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        check_tiff_header(b"II*\x00\xff\xff\x00\x00")


def test_tiled_and_planar_tiffs_from_another_writer_are_read():
    tifffile = pytest.importorskip("tifffile")  # not a dependency: checked where it is installed
    import io

    import numpy as np

    from model.preprocessing import prepare

    plane = (np.indices((300, 260)).sum(0) % 256).astype(np.uint8)
    for array, options in ((plane, {"tile": (64, 64)}), (plane, {"tile": (64, 64), "compression": "zlib"}),
                           (plane, {"rowsperstrip": 1}),
                           (np.stack([plane] * 3), {"photometric": "rgb", "planarconfig": "separate", "rowsperstrip": 7})):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, **options)
        assert prepare(buffer.getvalue()).gray.shape == (300, 260), options


def _segmented(words) -> bytes:
    """A 64² PALETTE COLOR DICOM whose three segmented LUTs are ``words`` (descriptor: 256 entries, 16 bits)."""
    import io

    import numpy as np
    import pydicom
    from hostile4_corpus import segmented_palette_dicom

    ds = pydicom.dcmread(io.BytesIO(segmented_palette_dicom(1, 1)))
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"Segmented{colour}PaletteColorLookupTableData", np.asarray(words, "<u2").tobytes())
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_segmented_palette_longer_than_its_descriptor_is_refused_before_expanding():
    """Item 3: 1,000 linear segments of 65,535 entries (22 KB) took 5.2 GB; 10 of them are refused here at once."""
    from hostile4_corpus import segmented_palette_dicom

    from model.preprocessing import ImageInputError, prepare

    with pytest.raises(ImageInputError, match="segmented palette expands beyond the 256 entries"):
        _, peak_mb = _peak_python_mb(prepare, segmented_palette_dicom(10, 65_535))
    for words in ([0, 1, 0, 2, 1, 3, 0], [0, 1, 0, 7, 3, 9]):  # an indirect segment copying itself; an unknown opcode
        with pytest.raises(ImageInputError, match="segmented palette is damaged"):
            prepare(_segmented(words))


def test_segmented_palette_within_its_descriptor_is_applied():
    import numpy as np

    from model.preprocessing import prepare

    # discrete 0, linear to 65535 over 127 entries, then an indirect copy of those two segments (128 more): 256 entries
    words = [0, 1, 0, 1, 127, 65535, 2, 2, 0, 0]
    gray = prepare(_segmented(words)).gray
    index = np.indices((64, 64)).sum(0) % 256
    assert gray.shape == (64, 64) and np.corrcoef(gray.ravel(), (index % 128).ravel())[0, 1] > 0.99


@pytest.mark.parametrize("bits", [32, 64])
def test_deep_dicom_pixels_are_shrunk_before_the_lut_steps(bits):
    """Item 4: a deflated 5000² 32-bit DICOM with a rescale and a window took 922 MB (64-bit 3600²: 643 MB): the LUT
    steps' float64 copies were of the full frame. Here a 2600² frame: at most 4.5 frames' worth of Python/NumPy memory
    at the peak (it was 9.7 frames at 32 bits, 6.3 at 64), and the picture is the frame's own, halved."""
    import numpy as np
    from hostile4_corpus import deep_deflated_dicom

    from model.preprocessing import prepare

    side = 2600
    prepared, peak_mb = _peak_python_mb(prepare, deep_deflated_dicom(side, bits))
    frame_mb = side * side * bits / 8 / 2**20
    assert peak_mb < 4.5 * frame_mb, (peak_mb, frame_mb)
    assert prepared.gray.shape == (side // 2, side // 2)
    expected = (np.indices((side // 2, side // 2)).sum(0) * 2 + 1) % 4096  # each 2×2 block's mean index
    assert np.corrcoef(prepared.gray.ravel().astype(float), expected.ravel())[0, 1] > 0.95


def test_deep_integer_shrink_keeps_the_dtype_and_block_means():
    import numpy as np

    from model.dicom import _shrink_integers
    from model.pixels import WORKING_MAX_SIDE

    pixels = np.arange(4100 * 3, dtype=np.uint32).reshape(3, 4100).repeat(3, axis=0) * 70_000
    out = _shrink_integers(np.ascontiguousarray(np.broadcast_to(pixels[:1], (4100, 4100))))
    assert out.dtype == np.uint32 and max(out.shape) <= WORKING_MAX_SIDE and out.shape == (1366, 1366)
    assert out[0, 0] == 70_000  # mean of 0, 1, 2 (× 70,000), three columns a block


def test_run_length_bmp_is_read_up_to_the_working_size_and_refused_above_it():
    """Item 5: a 40 KB 9800² RLE8 BMP (one pixel, then end-of-line, per row) took 23 s of CPU in Pillow's Python
    decoder; above 2048² a run-length BMP is refused from its header, at or below it it is read (about a second)."""
    import time

    from hostile4_corpus import rle_bmp

    from model.preprocessing import ImageInputError, colour_preview, prepare

    start = time.process_time()
    for data in (rle_bmp(2_100), rle_bmp(2_100, rle4=True, full_rows=True)):
        with pytest.raises(ImageInputError, match="run-length compressed BMP of 2100×2100 pixels"):
            prepare(data)
        assert colour_preview(data, 64) is None
    assert time.process_time() - start < 0.5
    gray = prepare(rle_bmp(256)).gray
    assert gray.shape == (256, 256) and (gray[:, 0] == 85).all() and not gray[:, 1:].any()
    assert prepare(rle_bmp(256, rle4=True, full_rows=True)).gray.min() == 119  # palette entry 7 of 16 everywhere


BIDI_NAME = "x\u202egnp.LAMRON :tluser\u202c \u2067y\u2069\u200e\u200f.png"


def test_bidi_controls_in_names_are_shown_as_visible_marks_in_table_and_csv():
    """Item 9: a right-to-left override made "File: xresult: NORMAL.png" appear above a PNEUMONIA result."""
    from model.service import BIDI_CONTROLS, BatchItem, results_rows, rows_to_csv, shown_name

    assert shown_name(BIDI_NAME) == "x[U+202E]gnp.LAMRON :tluser[U+202C] [U+2067]y[U+2069][U+200E][U+200F].png"
    assert shown_name(shown_name(BIDI_NAME)) == shown_name(BIDI_NAME)
    assert shown_name("rtg_חזה_صدر.png") == "rtg_חזה_صدر.png"  # right-to-left letters themselves are left alone
    rows = results_rows([BatchItem(1, BIDI_NAME, None, "could not be read")], 0.5)
    text = rows_to_csv(rows)
    assert not any(c in text or c in rows[0]["file"] for c in BIDI_CONTROLS) and "[U+202E]" in text


def test_bidi_controls_in_an_uploaded_name_never_reach_the_page(sample_files):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from model.service import BIDI_CONTROLS

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.file_uploader(key="uploads").set_value([(BIDI_NAME, sample_files[-1].read_bytes(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    shown = [e.value for e in (*at.text, *at.markdown, *at.caption, *at.error, *at.warning, *at.info) if isinstance(e.value, str)]
    assert any("File: x[U+202E]gnp" in s for s in shown), shown
    assert not any(c in s for s in shown for c in BIDI_CONTROLS)


def test_messages_quote_the_files_own_size_and_say_damaged_when_damaged():
    """Item 10: a 1 × 50000 image was "only 1×2048 pixels" (its shrunk copy), a 10954² progressive CMYK JPEG was
    described at its draft size 2739², and a JPEG DICOM with a bogus offset table was said to need a codec this
    installation lacks although the codec is installed."""
    from conftest import encode
    from hardening_corpus import _dicom_with, _progressive_bomb
    from hostile4_corpus import jpeg_dicom_with_bogus_offset_table
    from PIL import Image

    from model.preprocessing import ImageInputError, prepare

    cases = {encode(Image.new("L", (1, 50_000))): "only 1×50000 pixels",
             encode(Image.new("L", (9_000, 40))): "9000×40 pixels: too elongated",
             _progressive_bomb("CMYK"): "10954×10954 pixels (CMYK, progressive)",
             _dicom_with(Rows=20, Columns=3_000): "only 3000×20 pixels",
             jpeg_dicom_with_bogus_offset_table(): "damaged or inconsistent with its header (JPEG Baseline"}
    for data, message in cases.items():
        with pytest.raises(ImageInputError) as err:
            prepare(data)
        assert message in str(err.value), str(err.value)


def test_analysis_queue_admits_at_most_its_slots_in_arrival_order():
    """Item 6: one budget for the whole server; eight large analyses at once took the server to 1.5 GB."""
    import threading
    import time

    from model.admission import AnalysisQueue

    queue, lock, running, peak, order = AnalysisQueue(2), threading.Lock(), [0], [0], []

    def analyse(number):
        with queue.slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(number)
            time.sleep(0.02)
            with lock:
                running[0] -= 1

    threads = []
    for number in range(8):
        threads.append(threading.Thread(target=analyse, args=(number,)))
        threads[-1].start()
        time.sleep(0.002)  # arrive in order
    for thread in threads:
        thread.join(5)
    assert peak[0] == 2 and sorted(order) == list(range(8)) and order[2:] == sorted(order[2:])
    assert not queue.busy and queue.waiting == 0


def test_a_visitor_who_stops_waiting_leaves_the_queue():
    import threading

    from model.admission import AnalysisQueue

    queue, holding, release = AnalysisQueue(1), threading.Event(), threading.Event()

    def hold():
        with queue.slot():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    assert queue.busy
    with pytest.raises(TimeoutError):
        with queue.slot(timeout=0.05):
            pass
    assert queue.waiting == 0
    release.set()
    holder.join(5)
    with queue.slot(timeout=1):
        assert queue.busy
    with pytest.raises(ValueError):
        AnalysisQueue(0)


def test_analysis_slots_are_sized_from_the_memory_budget(monkeypatch):
    from app import server_config

    assert server_config.analysis_slots(690) == 1  # the hosted tier: one large analysis at a time
    assert server_config.analysis_slots(1_000) == 2 and server_config.analysis_slots(100) == 1
    monkeypatch.setenv("APP_MEMORY_MB", "2000")
    assert server_config.analysis_slots() == 5


def test_threshold_and_opacity_changes_render_no_report_until_one_is_asked_for(sample_files, monkeypatch):
    """Item 8: every threshold or opacity change rendered the PNG and the PDF report (about 2 s of a 2.1 s rerun);
    now a report is rendered only when its "Prepare" button is pressed, once per setting."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from model import report

    rendered = []
    original = report.render_report
    monkeypatch.setattr(report, "render_report", lambda *a, **k: rendered.append(k.get("fmt")) or original(*a, **k))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.file_uploader(key="uploads").set_value([("chest.jpeg", sample_files[-1].read_bytes(), "image/jpeg")]).run()
    for value in (0.3, 0.31, 0.32):
        at.slider(key="threshold_slider").set_value(value).run()
    at.slider(key="opacity").set_value(0.6).run()
    assert not at.exception and rendered == []
    prepare_pdf = next(b for b in at.button if b.label == "Prepare report (PDF)")
    prepare_pdf.click().run()
    assert not at.exception and rendered == ["pdf"]
    assert [e for e in at.get("download_button") if "PDF" in e.proto.label]
    assert not [b for b in at.button if b.label == "Prepare report (PDF)"]
    at.slider(key="threshold_slider").set_value(0.4).run()  # a new setting: the old report is not offered
    assert rendered == ["pdf"] and [b for b in at.button if b.label == "Prepare report (PDF)"]


def test_an_upload_is_held_once_the_scripts_deep_copy_is_closed(monkeypatch):
    """Item 7: Streamlit deep-copies the uploader's value on every run, and the app kept that copy's bytes: a 3 × 30 MB
    batch was held twice (a server settled at 440 MB, now 351 MB). The app takes the upload manager's own bytes."""
    import copy
    from types import SimpleNamespace

    import streamlit.runtime.scriptrunner as scriptrunner
    from streamlit.proto.Common_pb2 import FileURLs
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from app.server_config import upload_bytes

    record = UploadedFileRec("f1", "chest.png", "image/png", bytes(range(256)) * 4096)
    script_copy = copy.deepcopy(UploadedFile(record, FileURLs()))  # what st.file_uploader hands the script (a copy
    # of the bytes, unless share_uploads_between_runs is in effect)
    manager = SimpleNamespace(get_files=lambda session, ids: [record] if (session, ids) == ("s1", ["f1"]) else [])
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda: SimpleNamespace(session_id="s1", uploaded_file_mgr=manager))
    assert upload_bytes(script_copy) is record.data and script_copy.closed
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda: None)  # outside a script run: the copy it was given
    other = copy.deepcopy(UploadedFile(record, FileURLs()))
    data = upload_bytes(other)
    assert data == record.data and other.closed


def test_streamlits_per_run_deep_copy_of_an_upload_shares_its_bytes():
    """Item 7: every rerun deep-copied each held upload (a 100 MB batch: 100 MB more per threshold change)."""
    import copy

    from streamlit.proto.Common_pb2 import FileURLs
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from app.server_config import share_uploads_between_runs

    share_uploads_between_runs()
    share_uploads_between_runs()  # idempotent
    record = UploadedFileRec("f1", "chest.png", "image/png", bytes(range(256)) * 4096)
    stored = UploadedFile(record, FileURLs())
    [copied] = copy.deepcopy([stored])
    assert copied is not stored and copied.getvalue() is record.data and copied.name == "chest.png"
    copied.write(b"changed")  # the script may write to its copy: the stored file and record are untouched
    copied.close()
    assert stored.getvalue() is record.data and not stored.closed

