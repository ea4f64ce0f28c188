"""Bad and awkward inputs, generated: name -> (file name, bytes, expectation).

Expectation: ("error", text) the file is refused with a message containing text;
("ood", reason) it is analysed but flagged out of distribution for that reason;
("ok", None) it is analysed normally.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from conftest import encode, make_dicom, synthetic_xray
from PIL import Image


def _declared_png(width, height) -> bytes:
    data = bytearray(encode(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _unsupported_dicom() -> bytes:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((64, 64), np.uint16), transfer_syntax=JPEGLSLossless,
                                               with_pixels=False)))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(200)])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _float_tiff(fill_nan: bool) -> bytes:
    pixels = synthetic_xray(5).astype(np.float32)
    if fill_nan:
        pixels[:] = np.nan
    else:
        pixels[:20] = np.nan
    return encode(Image.fromarray(pixels, mode="F"), "TIFF")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(synthetic_xray(6, size=(300, 240))), "JPEG", exif=exif.tobytes())


def _gif() -> bytes:
    frames = [Image.fromarray(synthetic_xray(s)) for s in (7, 8)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def build_corpus(sample_jpeg: bytes) -> dict[str, tuple[str, bytes, tuple[str, str | None]]]:
    xray = Image.open(io.BytesIO(sample_jpeg)).convert("L")
    big = xray.resize((6000, 5000))
    photo = np.asarray(Image.fromarray(np.uint8(np.indices((240, 320)).sum(0) % 256)).convert("RGB")).copy()
    photo[..., 0] = 255 - photo[..., 0]
    return {
        "empty": ("empty.png", b"", ("error", "empty")),
        "text_as_png": ("notes.png", b"Patient notes, definitely not an image\n" * 20, ("error", "not an image format")),
        "pdf": ("scan.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF", ("error", "not an image format")),
        "truncated_jpeg": ("cut.jpeg", sample_jpeg[: len(sample_jpeg) // 3], ("error", "damaged or truncated")),
        "truncated_png": ("cut.png", encode(Image.fromarray(synthetic_xray(1)))[:900], ("error", "damaged or truncated")),
        "decompression_bomb": ("bomb.png", _declared_png(100_000, 100_000), ("error", "implausibly large")),
        "over_pixel_limit": ("huge.png", _declared_png(12_000, 11_000), ("error", "megapixels")),
        "one_pixel": ("dot.png", encode(Image.new("L", (1, 1), 128)), ("error", "at least")),
        "extreme_aspect": ("strip.png", encode(Image.fromarray(synthetic_xray(2, size=(60, 600)))), ("error", "too elongated")),
        "dicom_no_pixels": ("empty.dcm", make_dicom(np.zeros((64, 64), np.uint16), with_pixels=False), ("error", "no pixel data")),
        "dicom_unsupported_compression": ("jpegls.dcm", _unsupported_dicom(), ("error", "compression")),
        "dicom_corrupt": ("corrupt.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 4, ("error", "DICOM")),
        "all_nan_float": ("nan.tiff", _float_tiff(True), ("error", "no valid pixel values")),
        "constant": ("grey.png", encode(Image.new("L", (400, 400), 128)), ("ood", "blank")),
        "colour_photo": ("holiday.jpeg", encode(Image.fromarray(photo), "JPEG"), ("ood", "colour")),
        "sixteen_bit_png": ("xray16.png", encode(Image.fromarray(np.asarray(xray).astype(np.uint16) * 256)), ("ok", None)),
        "rgba_png": ("xray_rgba.png", encode(xray.convert("RGBA")), ("ok", None)),
        "palette_png": ("xray_p.png", encode(xray.convert("P")), ("ok", None)),
        "cmyk_jpeg": ("xray_cmyk.jpeg", encode(xray.convert("CMYK"), "JPEG"), ("ok", None)),
        "animated_gif": ("anim.gif", _gif(), ("ok", None)),
        "exif_rotated": ("rotated.jpeg", _exif_rotated(), ("ok", None)),
        "very_large_scan": ("big.jpeg", encode(big, "JPEG", quality=85), ("ok", None)),
        "dicom_monochrome1": ("mono1.dcm", make_dicom(255 - np.asarray(xray).astype(np.uint16), "MONOCHROME1"), ("ok", None)),
        "some_nan_float": ("partnan.tiff", _float_tiff(False), ("ok", None)),
        "wrong_extension": ("xray.png", sample_jpeg, ("ok", None)),
    }
