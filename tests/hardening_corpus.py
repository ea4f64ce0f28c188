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


def _declared_png(width, height, mode="L") -> bytes:
    data = bytearray(encode(Image.new(mode, (1, 1))))
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


def _dicom_with(pixels=None, **header) -> bytes:
    """A valid DICOM whose header is then changed: malformed windows, LUT functions, sizes."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels if pixels is not None else synthetic_xray(30).astype(np.uint16) * 16)))
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _multiframe_dicom() -> bytes:
    """Eight frames; only the first one may be decoded (frame 0 is the X-ray, the others blank)."""
    first = synthetic_xray(31).astype(np.uint16) * 16
    frames = np.concatenate([first[None], np.zeros((7, *first.shape), np.uint16)])
    return _dicom_with(first, NumberOfFrames=8, PixelData=frames.tobytes())


def _deflate_bomb(frames=256, side=1024) -> bytes:
    """A deflated DICOM of a few hundred KB that inflates to frames × side² bytes (256 MB by default)."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint8), with_pixels=False)))
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.BitsAllocated, ds.BitsStored, ds.HighBit = side, side, frames, 8, 8, 7
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_bytes = frames * side * side
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [deflater.compress(body.getvalue() + header)]
    zeros = bytes(1 << 20)
    for _ in range(pixel_bytes >> 20):
        chunks.append(deflater.compress(zeros))
    chunks.append(deflater.flush())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    return out.getvalue() + b"".join(chunks)


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
        "text_as_png": ("notes.png", b"Patient notes, definitely not an image\n" * 20, ("error", "not an image we can read")),
        "pdf": ("scan.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF", ("error", "not an image we can read")),
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
        # Resource bombs: small files that declare huge decodes, refused from the header.
        "rgba_decode_bomb": ("wide.png", _declared_png(10_950, 10_950, "RGBA"), ("error", "decoding it would take")),
        "dicom_deflate_bomb": ("deflated.dcm", _deflate_bomb(), ("error", "expands to more than")),
        "dicom_huge_frame": ("frame.dcm", _dicom_with(Rows=9000, Columns=9000), ("error", "too large")),
        "dicom_multiframe": ("frames.dcm", _multiframe_dicom(), ("ok", None)),
        # Malformed headers: a plain message, or a sensible fallback (a broken window is ignored).
        "dicom_zero_window": ("window0.dcm", _dicom_with(WindowCenter=100, WindowWidth=0), ("ok", None)),
        "dicom_negative_window": ("window-.dcm", _dicom_with(WindowCenter=100, WindowWidth=-50), ("ok", None)),
        "dicom_unknown_voi_function": ("voi.dcm", _dicom_with(WindowCenter=2000, WindowWidth=4000, VOILUTFunction="BOGUS"),
                                       ("ok", None)),
        "dicom_multivalued_rows": ("rows.dcm", _dicom_with(Rows=[256, 256]), ("error", "Rows is not a single number")),
        "dicom_zero_columns": ("cols.dcm", _dicom_with(Columns=0), ("error", "Columns must be positive")),
    }
