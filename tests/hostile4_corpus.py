"""Round four's hostile files (issue 26), generated: each builder takes the size of its table or image, so tests
build small ones and ``python -m bench hostile`` the sizes the issue measured."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image


def _png(image: Image.Image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kw)
    return buffer.getvalue()


def exif_block(orientation: int, private_shorts: int) -> bytes:
    """A little-endian TIFF-structured EXIF block: Orientation, then one private tag (0xC000) of ``private_shorts``
    SHORT values (2 bytes each), stored after the IFD."""
    entries = 2
    data_offset = 8 + 2 + entries * 12 + 4
    ifd = struct.pack("<H", entries)
    ifd += struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", orientation, 0)
    ifd += struct.pack("<HHII", 0xC000, 3, private_shorts, data_offset)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(2 * private_shorts)


def exif_bomb(private_shorts: int = 15_000_000, orientation: int = 6, size=(512, 512), fmt: str = "PNG") -> bytes:
    """Item 1: a small image (width, height) whose EXIF block carries an orientation and millions of private SHORT
    values; its top-left quarter is white, the rest black."""
    pixels = np.zeros(size[::-1], np.uint8)
    pixels[:size[1] // 2, :size[0] // 2] = 255
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    image.save(buffer, format=fmt, exif=exif_block(orientation, private_shorts), **extra)
    return buffer.getvalue()


def tiff_with_table(entries: int, tiles: bool = False, side: int = 512) -> bytes:
    """Item 2: a little-endian 8-bit grey ``side``² TIFF whose StripOffsets (or TileOffsets, 16² tiles) and byte counts
    list ``entries`` values each (both tags point at one shared table of zeros); the pixels follow the table."""
    table = bytes(4 * entries)
    tags = {256: (4, 1, side), 257: (4, 1, side), 258: (3, 1, 8), 259: (3, 1, 1), 262: (3, 1, 1), 277: (3, 1, 1)}
    if tiles:
        tags.update({322: (3, 1, 16), 323: (3, 1, 16), 324: (4, entries, None), 325: (4, entries, None)})
    else:
        tags.update({273: (4, entries, None), 278: (3, 1, 1), 279: (4, entries, None)})
    ifd_size = 2 + 12 * len(tags) + 4
    table_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, (kind, count, value) in sorted(tags.items()):
        if value is None:
            value = table_offset if count > 1 else table_offset + len(table)
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + table + bytes(side * side)


def _dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def segmented_palette_dicom(linear_segments: int = 1_000, segment_length: int = 65_535, side: int = 64) -> bytes:
    """Item 3: PALETTE COLOR with a segmented LUT (descriptor: 256 entries of 16 bits): one discrete entry, then
    ``linear_segments`` linear segments of ``segment_length`` entries each (a ramp up and down)."""
    import pydicom
    from conftest import make_dicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom((np.indices((side, side)).sum(0) % 256).astype(np.uint8))))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    words = [0, 1, 0]
    for n in range(linear_segments):
        words += [1, segment_length, 65535 if n % 2 == 0 else 0]
    segmented = np.asarray(words, "<u2").tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"Segmented{colour}PaletteColorLookupTableData", segmented)
        ds[f"Segmented{colour}PaletteColorLookupTableData"].VR = "OW"
    return _dicom_bytes(ds)


def deep_deflated_dicom(side: int = 5_000, bits: int = 32) -> bytes:
    """Item 4: a deflated ``side``² DICOM of ``bits``-bit unsigned pixels with a rescale and a window."""
    import pydicom
    from conftest import make_dicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint16))))
    pixels = (np.indices((side, side), dtype=np.int64).sum(0) % 4096 * 1000).astype(f"<u{bits // 8}")
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = side, side, bits, bits, bits - 1
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 64 else "OW"
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 0.5, -100, 900_000, 1_800_000
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return _dicom_bytes(ds)


def rle_bmp(side: int = 9_800, rle4: bool = False, full_rows: bool = False) -> bytes:
    """Item 5: an 8-bit (RLE8) or 4-bit (RLE4) run-length BMP, ``side``² with a grey palette. Each row is one pixel then
    end-of-line (Pillow pads the rest of the row a byte at a time), or with ``full_rows`` runs of 254 pixels filling
    the row (RLE4 expands those a pixel at a time)."""
    colours = 16 if rle4 else 256
    palette = b"".join(bytes((v, v, v, 0)) for v in np.linspace(0, 255, colours).astype(np.uint8))
    row = bytearray()
    if full_rows:
        left = side
        while left:
            run = min(254, left)
            row += bytes((run, 0x7F if rle4 else 0x80))
            left -= run
    else:
        row += bytes((1, 0x55))
    body = (bytes(row) + b"\x00\x00") * side + b"\x00\x01"
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 4 if rle4 else 8, 2 if rle4 else 1, len(body), 2835, 2835,
                       colours, 0)
    return b"BM" + struct.pack("<IHHI", header_size + len(body), 0, 0, header_size) + info + palette + body


def jpeg_dicom_with_bogus_offset_table(rows: int = 256, columns: int = 256) -> bytes:
    """Item 10: a JPEG Baseline DICOM (a decodable grey JPEG) whose Basic Offset Table points past its only frame."""
    import pydicom
    from conftest import make_dicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buffer = io.BytesIO()
    Image.fromarray((np.indices((rows, columns)).sum(0) % 256).astype(np.uint8)).save(buffer, format="JPEG")
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint8), transfer_syntax=JPEGBaseline8Bit,
                                               with_pixels=False)))
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, columns, 8, 8, 7
    encapsulated = bytearray(encapsulate([buffer.getvalue()], has_bot=True))
    encapsulated[8:12] = struct.pack("<I", 0x7FFFFFF0)  # the first frame's offset: far past the data
    ds.PixelData = bytes(encapsulated)
    ds["PixelData"].VR = "OB"
    return _dicom_bytes(ds)
