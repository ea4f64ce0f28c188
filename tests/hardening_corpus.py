"""Bad and awkward inputs, generated: name -> (file name, bytes, expectation).

Expectation: ("error", text) the file is refused with a message containing text;
("ood", reason) it is analysed but flagged out of distribution for that reason;
("ok", None) it is analysed normally.
"""

from __future__ import annotations

import io
import struct
import warnings
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


# ---------- round three: formats chosen by content, codestreams larger than their header, markup ----------

_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\n"  # would run Ghostscript, forever
_FITS = b"SIMPLE  =                    T" + b" " * 50 + b"BITPIX  =                    8" + b" " * 2850
_QOI = b"qoif" + struct.pack(">II", 5000, 5000) + b"\x04\x00" + bytes(8)
_DDS = b"DDS " + struct.pack("<7I", 124, 0x100F, 5000, 5000, 0, 0, 0) + bytes(100)
_J2K = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40)
MARKUP = "1.2.3.4 **BOLD** [click me](http://example.invalid/) ![x](http://example.invalid/track.png)"


def _ico() -> bytes:
    return encode(Image.fromarray(synthetic_xray(9, size=(64, 64))), "ICO")


def _tga() -> bytes:  # no signature at all: only Pillow's guess would open it
    return encode(Image.fromarray(synthetic_xray(10)), "TGA")


def _palette_transparency_bomb() -> bytes:
    """A palette PNG with transparency declaring 10000²: flattening it would make RGBA (5 bytes a pixel in all)."""
    data = bytearray(encode(Image.new("P", (1, 1)), transparency=0))
    data[16:24] = struct.pack(">II", 10_000, 10_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF) declaring another size."""
    data, pos = bytearray(jpeg), 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _progressive_bomb(mode: str) -> bytes:
    small = encode(Image.new(mode, (16, 16)), "JPEG", progressive=True)
    return _patch_sof(small, 10_954, 10_954)


def _mpo(big: Image.Image) -> bytes:
    """A multi-picture JPEG of 6000×5000 RGB: 120 MB undrafted, so it needs the JPEG draft decode to pass."""
    rgb = big.convert("RGB")
    return encode(rgb, "MPO", save_all=True, append_images=[rgb.resize((64, 64))], quality=70)


def _encapsulated_dicom(syntax, fragment: bytes, rows=512, columns=512, samples=1, bits=8) -> bytes:
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint8), transfer_syntax=syntax, with_pixels=False)))
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, columns, samples, bits, bits, bits - 1
    if samples == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _j2k_in_dicom() -> bytes:
    """A 512×512 header around a JPEG 2000 codestream whose SIZ declares 13000² (the codestream's header only)."""
    from pydicom.uid import JPEG2000Lossless

    siz = struct.pack(">HH8IH", 41, 0, 13_000, 13_000, 0, 0, 13_000, 13_000, 0, 0, 1) + b"\x07\x01\x01"
    return _encapsulated_dicom(JPEG2000Lossless, b"\xff\x4f\xff\x51" + siz + b"\xff\xd9")


def _jpeg_in_dicom() -> bytes:
    """A 512×512 grey header around an RGB baseline JPEG whose SOF declares 13000²."""
    from pydicom.uid import JPEGBaseline8Bit

    return _encapsulated_dicom(JPEGBaseline8Bit, _patch_sof(encode(Image.new("RGB", (16, 16)), "JPEG"), 13_000, 13_000))


def _rle_bomb() -> bytes:
    """A 64×64 RLE Lossless header whose one segment is 64 KB of replicate runs: 4 MB decoded, 1000× the frame."""
    from pydicom.uid import RLELossless

    segment = b"\x81\x00" * 32_768
    return _encapsulated_dicom(RLELossless, struct.pack("<16I", 1, 64, *[0] * 14) + segment, rows=64, columns=64)


def _rle_ok() -> bytes:
    import pydicom
    from pydicom.pixels.utils import compress  # noqa: F401 (pydicom's own RLE encoder)
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(io.BytesIO(make_dicom(synthetic_xray(33).astype(np.uint16) * 16)))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _without_preamble() -> bytes:
    return make_dicom(synthetic_xray(34).astype(np.uint16) * 16)[132:]  # file meta first: no preamble, no DICM


def _without_file_meta() -> bytes:
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(io.BytesIO(make_dicom(synthetic_xray(35).astype(np.uint16) * 16)))
    del ds.file_meta
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    return out.getvalue()


def _float_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((64, 64), np.uint16), with_pixels=False)))
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros((64, 64), np.float32).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _palette_dicom() -> bytes:
    """PALETTE COLOR: 8-bit indices into a grey ramp palette (inverted, so a raw-index read would be a negative)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(255 - synthetic_xray(36))))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ramp = np.linspace(65535, 0, 256).astype("<u2").tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _markup_syntax_dicom() -> bytes:
    """A TransferSyntaxUID carrying markdown: bold, a link and a tracking image."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(synthetic_xray(37).astype(np.uint16))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that the value is no UID: that is the point
        ds.file_meta.TransferSyntaxUID = MARKUP
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def _deflated_lut_dicom(side=2500) -> bytes:
    """A deflated 16-bit DICOM with a rescale slope and a window (the LUT steps' float copies)."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    pixels = (np.indices((side, side)).sum(0) % 4096).astype(np.uint16)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels)))
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 0.5, -100, 900, 1800
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_corpus(sample_jpeg: bytes) -> dict[str, tuple[str, bytes, tuple[str, str | None]]]:
    xray = Image.open(io.BytesIO(sample_jpeg)).convert("L")
    big = xray.resize((6000, 5000))
    photo = np.asarray(Image.fromarray(np.uint8(np.indices((240, 320)).sum(0) % 256)).convert("RGB")).copy()
    photo[..., 0] = 255 - photo[..., 0]
    return {
        "empty": ("empty.png", b"", ("error", "empty")),
        "text_as_png": ("notes.png", b"Patient notes, definitely not an image\n" * 20, ("error", "not an image we can read")),
        "pdf": ("scan.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF", ("error", "PDF, which is not an image format")),
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
        # Round three: only the formats we read, identified by content, whatever the name.
        "eps_named_png": ("chest.png", _EPS, ("error", "PostScript/EPS, which is not an image format we read")),
        "fits": ("chest.png", _FITS, ("error", "FITS")),
        "qoi": ("chest.png", _QOI, ("error", "QOI")),
        "dds": ("chest.png", _DDS, ("error", "DDS")),
        "jpeg2000_file": ("chest.jp2", _J2K, ("error", "JPEG 2000")),
        "ico": ("chest.ico", _ico(), ("error", "ICO")),
        "tga_no_signature": ("chest.png", _tga(), ("error", "not an image we can read")),
        "palette_transparency_bomb": ("trns.png", _palette_transparency_bomb(), ("error", "decoding it would take")),
        "progressive_cmyk_bomb": ("prog.jpeg", _progressive_bomb("CMYK"), ("error", "progressive")),
        "progressive_rgb_bomb": ("progrgb.jpeg", _progressive_bomb("RGB"), ("error", "progressive")),
        "mpo_large": ("camera.mpo.jpeg", _mpo(big), ("ok", None)),
        "dicom_j2k_larger_than_header": ("j2k.dcm", _j2k_in_dicom(), ("error", "declares 13000×13000")),
        "dicom_jpeg_larger_than_header": ("jpeg.dcm", _jpeg_in_dicom(), ("error", "declares 13000×13000")),
        "dicom_rle_bomb": ("rle.dcm", _rle_bomb(), ("error", "expands beyond")),
        "dicom_rle": ("rle_ok.dcm", _rle_ok(), ("ok", None)),
        "dicom_deflated_with_luts": ("deflut.dcm", _deflated_lut_dicom(), ("ok", None)),
        "dicom_no_preamble": ("bare.dcm", _without_preamble(), ("ok", None)),
        "dicom_no_file_meta": ("nometa.dcm", _without_file_meta(), ("ok", None)),
        "dicom_float_pixels": ("float.dcm", _float_dicom(), ("error", "floating-point pixel data")),
        "dicom_palette_color": ("palette.dcm", _palette_dicom(), ("ok", None)),
        "dicom_markup_in_header": ("markup.dcm", _markup_syntax_dicom(), ("error", "unknown transfer syntax")),
    }
