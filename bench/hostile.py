"""Peak memory of the worst input of each hostile class: ``python -m bench hostile [--out bench/hostile.json]``.

Each case is decoded through :func:`model.preprocessing.prepare` in a fresh
``python`` process that imports only what the server's decode path imports
(Pillow, OpenCV, NumPy, pydicom), and that process's peak resident size
(``VmHWM``) is reported, with the same process's peak after the imports
alone, so the difference is what the decode itself took. The cases are the
largest inputs the budgets admit (accepted) and the bombs of issues 21 and 26
(refused); the server's own idle size (about 200 MB) plus the decode's increase
must stay under the hosted tier's 690 MB.

``--server`` adds issue 26's server-wide figures, measured in-process (no browser):
eight visitors' largest images analysed at once with and without the app's
analysis queue, and the cost of a threshold or opacity change (AppTest).
``--only TEXT`` reruns some cases and keeps the other rows of ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import cv2, numpy, pydicom, PIL.Image  # what the server has loaded anyway
from model.preprocessing import prepare
from model.pixels import ImageInputError
data = open(sys.argv[1], "rb").read()
def hwm():  # VmHWM (kB): this process's own peak (ru_maxrss would carry the parent's across exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
base = hwm()
start = time.process_time()
try:
    prepare(data); outcome = "accepted"
except ImageInputError as exc:
    outcome = "refused: " + str(exc)[:90]
print(base, hwm(), time.process_time() - start, outcome, sep="\\t")
"""


def _encode(image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _declared_png(width, height, mode="L", **kw) -> bytes:
    from PIL import Image

    data = bytearray(_encode(Image.new(mode, (1, 1)), **kw))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def cases() -> dict[str, bytes]:
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    import hardening_corpus as corpus

    gradient = (np.indices((9_700, 9_700)).sum(0) % 256).astype(np.uint8)  # 94 MB: the largest L image admitted
    big = Image.fromarray(gradient)
    pal = big.convert("P")
    pal_side = 4_400  # 5 bytes a pixel: the largest palette+transparency PNG admitted
    return {
        "PNG L 9700² (largest admitted 8-bit)": _encode(big, compress_level=1),
        "PNG P+tRNS 4400² (largest admitted)": _encode(pal.resize((pal_side, pal_side)), transparency=0, compress_level=1),
        "PNG P+tRNS 10000² declared (refused)": _declared_png(10_000, 10_000, "P", transparency=0),
        "JPEG baseline RGB 9700² (draft-decoded)": _encode(big.convert("RGB"), "JPEG", quality=50),
        "JPEG progressive RGB 3000² (admitted)": _encode(big.resize((3_000, 3_000)).convert("RGB"), "JPEG", progressive=True),
        "JPEG progressive CMYK 10954² declared (refused)": corpus._progressive_bomb("CMYK"),
        "TIFF 16-bit 6900² (largest admitted)": _encode(Image.fromarray(gradient[:6_900, :6_900].astype(np.uint16) * 200), "TIFF"),
        "DICOM deflated 16-bit 7071² with rescale and window (largest admitted frame)": corpus._deflated_lut_dicom(7_071),
        "DICOM RLE bomb (refused)": corpus._rle_bomb(),
        "DICOM JPEG 2000 13000² in 512² header (refused)": corpus._j2k_in_dicom(),
        "EPS named .png (refused, no Ghostscript)": corpus._EPS,
        **round_four(),
    }


def round_four() -> dict[str, bytes]:
    """Issue 26's single files, at the sizes the issue measured (builders in tests/hostile4_corpus.py)."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    import hostile4_corpus as four

    return {
        "PNG 512² with EXIF Orientation 6 and 15M private SHORTs (30 MB)": four.exif_bomb(),
        "WebP lossless 512² with EXIF Orientation 6 and 15M private SHORTs": four.exif_bomb(fmt="WEBP"),
        "TIFF 512² with 7M StripOffsets (refused)": four.tiff_with_table(7_000_000),
        "TIFF 512² with 1M TileOffsets (refused)": four.tiff_with_table(1_000_000, tiles=True),
        "DICOM segmented palette, 1000 segments of 65535 (refused)": four.segmented_palette_dicom(),
        "DICOM deflated 32-bit 5000² with rescale and window": four.deep_deflated_dicom(5_000, 32),
        "DICOM deflated 64-bit 3600² with rescale and window": four.deep_deflated_dicom(3_600, 64),
        "BMP RLE8 9800², one pixel and end-of-line a row (refused)": four.rle_bmp(9_800),
        "BMP RLE8 2048², one pixel and end-of-line a row (largest admitted)": four.rle_bmp(2_048),
        "BMP RLE4 2048², full rows of runs (largest admitted)": four.rle_bmp(2_048, rle4=True, full_rows=True),
        "PNG 1×50000 (refused, its own size quoted)": _encode(Image.new("L", (1, 50_000))),
        "DICOM JPEG Baseline, bogus offset table (refused as damaged)": four.jpeg_dicom_with_bogus_offset_table(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hostile")
    parser.add_argument("--out", default=str(ROOT / "bench" / "hostile.json"))
    parser.add_argument("--only", help="run only the cases whose name contains this text; their rows replace the "
                                       "same cases' rows in --out, the others are kept")
    parser.add_argument("--server", action="store_true", help="also the server-wide figures: 8 concurrent analyses of "
                                                               "the largest admitted PNG with and without the queue, "
                                                               "and what a threshold or opacity change costs")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, data in cases().items():
            if args.only and args.only not in name:
                continue
            path = Path(folder) / "case"
            path.write_bytes(data)
            out = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT)), str(path)], capture_output=True,
                                 text=True, timeout=600, check=True).stdout.strip().splitlines()[-1]
            base, peak, cpu, outcome = out.split("\t")
            row = {"case": name, "file_kb": round(len(data) / 1024, 1), "imports_mb": round(int(base) / 1024),
                   "peak_mb": round(int(peak) / 1024), "decode_mb": round((int(peak) - int(base)) / 1024),
                   "cpu_s": round(float(cpu), 2), "outcome": outcome}
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.only or args.server:
        kept = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else []
        kept = kept if isinstance(kept, list) else []
        done = {row["case"] for row in results}
        results = [row for row in kept if row.get("case") not in done] + results
    if args.server:
        server = server_wide()
        results = [row for row in results if "server" not in row.get("case", "")] + server
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


_CONCURRENT = """
import io, sys, threading, time
sys.path.insert(0, {root!r})
import numpy as np
from PIL import Image
from app.server_config import limit_malloc_arenas, release_freed_memory, return_large_buffers
from model.admission import AnalysisQueue
from model.predictor import Predictor
from model.service import analyze_bytes
limit_malloc_arenas(2); return_large_buffers()  # as the app sets them
visitors, slots, side = {visitors}, {slots}, 9_700
buffer = io.BytesIO()
ramp = np.arange(side, dtype=np.uint16)
Image.fromarray((np.add.outer(ramp, ramp) % 256).astype(np.uint8)).save(buffer, "PNG", compress_level=1)
uploads = [buffer.getvalue() + bytes(i) for i in range(visitors)]  # distinct files (bytes after IEND are ignored)
del buffer
predictor = Predictor.load()
analyze_bytes(predictor, open({sample!r}, "rb").read())  # warm, as a server that has answered once
release_freed_memory()
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM: the peak from here on
status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) // 1024
idle, answers, barrier = status("VmRSS"), [], threading.Barrier(visitors)
queue = AnalysisQueue(slots) if slots else None
def visit(data):
    barrier.wait()
    start = time.perf_counter()
    if queue:
        with queue.slot():
            analyze_bytes(predictor, data)
    else:
        analyze_bytes(predictor, data)
    release_freed_memory()
    answers.append(time.perf_counter() - start)
threads = [threading.Thread(target=visit, args=(data,)) for data in uploads]
[t.start() for t in threads]
[t.join() for t in threads]
print(idle, status("VmHWM"), max(answers), len(answers), sep="\t")
"""

_RERUNS = """
import sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
from model import report
rendered = []
original = report.render_report
report.render_report = lambda *a, **k: rendered.append(1) or original(*a, **k)
at = AppTest.from_file({app!r}, default_timeout=300)
at.run()
at.file_uploader(key="uploads").set_value([("chest.jpeg", open({sample!r}, "rb").read(), "image/jpeg")]).run()
changes = [("threshold_slider", 0.30 + i / 100) for i in range(6)] + [("opacity", 0.30 + i / 20) for i in range(6)]
start = time.perf_counter()
for key, value in changes:
    at.slider(key=key).set_value(value).run()
print((time.perf_counter() - start) / len(changes), len(rendered), sep="\t")
"""


def server_wide() -> list[dict]:
    """In-process stand-ins for the server-wide cases (no browser): 8 visitors' largest admitted images analysed at once
    by threads of one process, as Streamlit's session threads would, with the app's analysis queue (the slots the
    690 MB tier gets) and without it; then the mean cost of a threshold or opacity change, run by AppTest."""
    from app.server_config import analysis_slots

    sample = str(sorted((ROOT / "app" / "samples").glob("*.jpeg"))[-1])
    rows = []
    for slots in (0, analysis_slots(690)):
        code = _CONCURRENT.format(root=str(ROOT), visitors=8, slots=slots, sample=sample)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                             check=True).stdout.strip().splitlines()[-1]
        idle, peak, slowest, answered = out.split("\t")
        row = {"case": f"server: 8 analyses of a 9700² PNG at once, {'no queue' if not slots else f'queue of {slots}'}",
               "idle_mb": int(idle), "peak_mb": int(peak), "above_idle_mb": int(peak) - int(idle),
               "slowest_answer_s": round(float(slowest), 1), "answered": int(answered)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    code = _RERUNS.format(root=str(ROOT), app=str(ROOT / "app" / "streamlit_app.py"), sample=sample)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         check=True).stdout.strip().splitlines()[-1]
    seconds, rendered = out.split("\t")
    row = {"case": "server: one threshold or opacity change (AppTest rerun, 12 changes)",
           "mean_rerun_s": round(float(seconds), 3), "reports_rendered": int(rendered)}
    print(json.dumps(row), flush=True)
    rows.append(row)
    return rows
