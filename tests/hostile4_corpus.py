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
