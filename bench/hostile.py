"""Peak memory of the worst input of each hostile class: ``python -m bench hostile [--out bench/hostile.json]``.

Each case is decoded through :func:`model.preprocessing.prepare` in a fresh
``python`` process that imports only what the server's decode path imports
(Pillow, OpenCV, NumPy, pydicom), and that process's peak resident size
(``VmHWM``) is reported, with the same process's peak after the imports
alone, so the difference is what the decode itself took. The cases are the
largest inputs the budgets admit (accepted) and the bombs of issue 21 (refused);
the server's own idle size (about 200 MB) plus the decode's increase must stay
under the hosted tier's 690 MB.
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
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hostile")
    parser.add_argument("--out", default=str(ROOT / "bench" / "hostile.json"))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, data in cases().items():
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
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0
