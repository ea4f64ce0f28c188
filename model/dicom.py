"""DICOM pixel decoding for the preprocessing path (pydicom, in memory), bounded before anything is decoded.

A small file can declare a huge image: a deflated dataset inflates without
limit, a multi-frame header multiplies the pixels, and ``pixel_array`` decodes
every frame. So the header is checked first (rows × columns × samples × bytes
of ONE frame under a budget), a deflated dataset is inflated under a byte budget
or refused, and only the first frame is ever decoded. Header values that make
no sense (non-positive or multi-valued sizes) get a plain message; a broken
window or LUT is ignored and the image is scaled by its own range instead.

A compressed frame can hold more than its header says, so before anything is
decoded the codestream's own declared size (JPEG SOF, JPEG-LS SOF55, JPEG 2000
SIZ) must match the header, and each RLE segment is walked (counting, keeping
nothing) to check it expands to no more than its share of the frame. A frame
larger than ``WORKING_MAX_SIDE`` is area-shrunk before the modality and VOI
steps, so their float copies are of the working size, not the full frame.

No message quotes a string read from the file (a header value could carry
markup); only numbers the module parsed itself, and names of known UIDs.

Only pixels leave this module: patient and study fields are never read out,
returned or logged.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
import zlib

import numpy as np

from model.pixels import WORKING_MAX_SIDE, ImageInputError, check_geometry, rescale_to_uint8, shrink_to_side

MAX_DICOM_PIXELS = 50_000_000  # real CR/DR detectors are below 20 MP
MAX_FRAME_BYTES = 100 * 2**20  # one decoded frame
MAX_INFLATED_BYTES = 128 * 2**20  # a deflated dataset, inflated
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
RLE_SYNTAX = "1.2.840.10008.1.2.5"
_FLOAT_PIXELS = {"FloatPixelData": "32-bit floating-point", "DoubleFloatPixelData": "64-bit floating-point"}

_PYDICOM_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError)


def decode_dicom(data: bytes, preamble: bool = True) -> np.ndarray:
    """DICOM bytes -> 2-D uint8 grayscale with modality/VOI LUT applied, MONOCHROME1 inverted, PALETTE COLOR mapped.

    ``preamble=False``: a DICOM stream without the 128-byte preamble (and maybe without file meta), read with
    pydicom's ``force``.

    pydicom's warnings can quote header values (patient fields included), so
    they are silenced here rather than logged.
    """
    _quiet_pydicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(data, preamble)


@functools.cache
def _quiet_pydicom() -> None:
    """pydicom logs header problems with their values: raise its logger to ERROR, once, on first use."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def _decode(data: bytes, preamble: bool = True) -> np.ndarray:
    dataset = _read_dataset(data, preamble)
    if "PixelData" not in dataset:
        kind = next((name for keyword, name in _FLOAT_PIXELS.items() if keyword in dataset), None)
        if kind:
            raise ImageInputError(f"The DICOM file stores {kind} pixel data (as in parametric maps), which this app "
                                  "does not read; a radiograph stores integer pixels.")
        raise ImageInputError("The DICOM file contains no image (no pixel data).")
    _check_frame_size(dataset)
    _check_codestream(dataset)
    pixels = _first_frame(dataset)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels = _apply_palette(shrink_to_side(pixels), dataset)
    if pixels.dtype.kind in "iu":
        pixels = _shrink_integers(pixels)  # before the LUT steps: their float64 copies are then of the working size
    if photometric.startswith("MONOCHROME"):
        pixels = _apply_luts(pixels, dataset)
    elif pixels.ndim == 3:
        pixels = shrink_to_side(pixels)[..., :3].mean(axis=2, dtype=np.float32)
    gray = rescale_to_uint8(shrink_to_side(np.asarray(pixels)))
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is bright
        gray = 255 - gray
    return gray


def _shrink_integers(pixels: np.ndarray) -> np.ndarray:
    """Integer pixels shrunk to the working size, still integers of their own type (a modality LUT table indexes by
    them). 8- and 16-bit ones are area-shrunk as they are. 32- and 64-bit ones (which OpenCV cannot resize) are
    averaged over k×k blocks, k the smallest factor that brings them within the working size, a band of rows at a
    time, so no full-frame float copy is made (a 5000² 32-bit frame went through the LUT steps at full size: 922 MB).
    Up to k - 1 edge rows and columns are dropped."""
    if pixels.dtype.itemsize <= 2 or max(pixels.shape[:2]) <= WORKING_MAX_SIDE:
        return shrink_to_side(pixels)
    k = -(-max(pixels.shape[:2]) // WORKING_MAX_SIDE)
    height, width = pixels.shape[0] // k, pixels.shape[1] // k
    tail = pixels.shape[2:]
    out = np.empty((height, width, *tail), np.float32)
    for top in range(0, height, 256):  # 256 output rows a band
        rows = min(256, height - top)
        band = pixels[top * k:(top + rows) * k, :width * k].astype(np.float32)
        out[top:top + rows] = band.reshape(rows, k, width, k, *tail).mean(axis=(1, 3))
    return np.rint(out).astype(pixels.dtype)


def _read_dataset(data: bytes, preamble: bool = True):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        _check_inflated_size(data, preamble)
        dataset = pydicom.dcmread(io.BytesIO(data), force=not preamble)
        if not preamble:
            _name_encoding(dataset)
        return dataset
    except ImageInputError:
        raise
    except (InvalidDicomError, zlib.error, *_PYDICOM_ERRORS):
        without = "" if preamble else " (it has no DICOM preamble, so it may not be DICOM at all)"
        raise ImageInputError(f"The DICOM file is damaged and cannot be read{without}.") from None


def _name_encoding(dataset) -> None:
    """A dataset without file meta: record the encoding pydicom read it with as its transfer syntax."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" in getattr(dataset, "file_meta", {}):
        return
    implicit, little = dataset.original_encoding
    dataset.file_meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                           ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _check_inflated_size(data: bytes, preamble: bool = True) -> None:
    """Refuse a deflated dataset that inflates past the budget, before pydicom inflates all of it."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    read_preamble(stream, not preamble)
    meta = _read_file_meta_info(stream)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_SYNTAX:
        return
    inflater, pending, inflated = zlib.decompressobj(-zlib.MAX_WBITS), data[stream.tell():], 0
    # Count in 8 MB pieces, keep none of them. Stop at the stream's end: pydicom pads an odd-length deflated stream
    # with a byte, which a finished inflater never consumes (looping on it never ended).
    while not inflater.eof and inflated <= MAX_INFLATED_BYTES:
        piece = inflater.decompress(pending, 8 * 2**20)
        inflated, pending = inflated + len(piece), inflater.unconsumed_tail
        if not piece and not pending:
            break
    if inflated > MAX_INFLATED_BYTES:
        raise ImageInputError(f"The compressed DICOM expands to more than {MAX_INFLATED_BYTES // 2**20} MB; "
                              "refusing to decode it.")


def _header_int(dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, default)
    if value is None:
        raise ImageInputError(f"The DICOM header has no {keyword}.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImageInputError(f"The DICOM header's {keyword} is not a single number.") from None
    if number <= 0:
        raise ImageInputError(f"The DICOM header's {keyword} must be positive (it is {number}).")
    return number


def _check_frame_size(dataset) -> None:
    rows, columns = _header_int(dataset, "Rows"), _header_int(dataset, "Columns")
    samples = _header_int(dataset, "SamplesPerPixel", 1)
    bits = _header_int(dataset, "BitsAllocated", 16)
    _header_int(dataset, "NumberOfFrames", 1)
    if rows * columns > MAX_DICOM_PIXELS:
        raise ImageInputError(f"The DICOM image is {columns}×{rows} pixels; too large to process.")
    check_geometry((rows, columns))  # the header's own size, before decoding or shrinking
    frame_bytes = rows * columns * samples * max(1, (bits + 7) // 8)
    if frame_bytes > MAX_FRAME_BYTES:
        raise ImageInputError(f"One DICOM frame would take {frame_bytes // 2**20} MB to decode; "
                              f"images above {MAX_FRAME_BYTES // 2**20} MB are not accepted.")


def _syntax(dataset) -> str:
    return str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")


def _syntax_name(dataset) -> str:
    """The transfer syntax's registered name; never the string from the file (it could carry markup)."""
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(_syntax(dataset))
    return entry[0] if entry and entry[1] == "Transfer Syntax" else "an unknown transfer syntax"


def _check_codestream(dataset) -> None:
    """An encapsulated frame's own declared size (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) must match the header;
    an RLE frame's segments must expand to no more than the frame. Checked before anything is decoded."""
    if not getattr(dataset["PixelData"], "is_undefined_length", False):
        return  # native (uncompressed) pixel data: its size is the header's
    from pydicom.encaps import generate_fragmented_frames

    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples = _header_int(dataset, "SamplesPerPixel", 1)
    try:  # the first frame's fragments (after the basic offset table); nothing is decoded
        frames = generate_fragmented_frames(dataset.PixelData, number_of_frames=_header_int(dataset, "NumberOfFrames", 1))
        fragments = next(frames, ())
    except (*_PYDICOM_ERRORS, StopIteration):
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.") from None
    if not fragments:
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.")
    if _syntax(dataset) == RLE_SYNTAX:
        frame = b"".join(fragments)
        _check_rle(frame, rows * columns, samples * max(1, (_header_int(dataset, "BitsAllocated", 16) + 7) // 8))
        return
    declared = _codestream_size(bytes(fragments[0][:65536]))
    if declared is None:
        return  # neither JPEG nor JPEG 2000: the decoder (if any) reports it
    width, height, components = declared
    if not (width and height):
        return  # no size in the codestream's header (or not a codestream): the decoder reports it
    if (width, height) != (columns, rows) or components > max(samples, 1):
        raise ImageInputError(f"The compressed image inside this DICOM declares {width}×{height} pixels "
                              f"({components} components), but the DICOM header says {columns}×{rows} ({samples}); "
                              "refusing to decode it.")


_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}  # baseline .. lossless, and JPEG-LS


def _codestream_size(head: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) a JPEG, JPEG-LS or JPEG 2000 codestream declares, from its first bytes."""
    import struct

    siz = head.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC then SIZ (also inside a JP2 file's jp2c box)
    if siz >= 0 and len(head) >= siz + 42:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">4I", head[siz + 8:siz + 24])
        return xsiz - xosiz, ysiz - yosiz, struct.unpack(">H", head[siz + 40:siz + 42])[0]
    if not head.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 9 < len(head):  # walk the marker segments up to the frame header
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", head[pos + 5:pos + 9])
            return width, height, head[pos + 9] if pos + 9 < len(head) else 1
        pos += 2 + struct.unpack(">H", head[pos + 2:pos + 4])[0]
    return None


def _check_rle(frame: bytes, pixels: int, segments: int) -> None:
    """Walk each RLE segment's run headers (keeping nothing) and refuse one that expands beyond ``pixels`` bytes, before
    pydicom decodes it whole. Stops as soon as a segment has produced more than its share."""
    import struct

    if len(frame) < 64:
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.")
    header = struct.unpack("<16I", frame[:64])
    count, offsets = header[0], [*header[1:header[0] + 1], len(frame)] if 0 < header[0] <= 15 else []
    if count != segments or any(not 64 <= a <= b <= len(frame) for a, b in zip(offsets, offsets[1:])):
        raise ImageInputError("The DICOM's RLE pixel data is damaged or inconsistent with its header.")
    limit = pixels + 1  # a segment may end with one byte of padding
    for start, end in zip(offsets, offsets[1:]):
        pos, produced = start, 0
        while pos < end and produced <= limit:
            n = frame[pos]
            if n < 128:  # literal run of n + 1 bytes
                produced, pos = produced + n + 1, pos + n + 2
            elif n > 128:  # replicate the next byte 257 - n times
                produced, pos = produced + 257 - n, pos + 2
            else:
                pos += 1
        if produced > limit:
            raise ImageInputError("The DICOM's RLE pixel data expands beyond the image its header declares; "
                                  "refusing to decode it.")


MAX_LUT_ENTRIES = 65_536  # a palette descriptor cannot declare more (0 means 65,536)


def _check_segmented_palette(dataset) -> None:
    """Refuse a segmented palette that expands past its descriptor's entry count, before pydicom expands it into Python
    lists (1,000 linear segments of 65,535 entries in a 22 KB file took 5.2 GB). Walks the segment headers only,
    counting; an indirect segment counts the segments it copies, which may not themselves be indirect."""
    for colour in ("Red", "Green", "Blue", "Alpha"):
        segmented = dataset.get(f"Segmented{colour}PaletteColorLookupTableData")
        if segmented is None:
            continue
        descriptor = dataset.get(f"{colour}PaletteColorLookupTableDescriptor") or dataset.get(
            "RedPaletteColorLookupTableDescriptor")
        try:
            entries = int(descriptor[0]) or MAX_LUT_ENTRIES
            eight_bit = int(descriptor[2]) == 8
        except (*_PYDICOM_ERRORS, ValueError):
            raise ImageInputError("The DICOM is PALETTE COLOR but its palette descriptor is damaged.") from None
        little = _syntax(dataset) != "1.2.840.10008.1.2.2"
        words = np.frombuffer(segmented.value if hasattr(segmented, "value") else segmented, np.uint8 if eight_bit else
                              ("<u2" if little else ">u2"))
        if _segments_length(words, eight_bit, little, min(entries, MAX_LUT_ENTRIES)) > min(entries, MAX_LUT_ENTRIES):
            raise ImageInputError(f"The DICOM's segmented palette expands beyond the {min(entries, MAX_LUT_ENTRIES)} entries "
                                  "its descriptor declares; refusing to decode it.")


def _segments_length(words: np.ndarray, eight_bit: bool, little: bool, limit: int, start: int = 0,
                     count: int | None = None) -> int:
    """Entries the segments from ``words[start:]`` expand to (``count`` segments, or all); stops once past ``limit``.
    Segment layout: PS3.3 C.7.9.2 (0 discrete, 1 linear, 2 indirect)."""
    total, position, read = 0, start, 0
    while position + 1 < len(words) and total <= limit and read != count:
        opcode, length = int(words[position]), int(words[position + 1])
        if opcode == 0:
            total, position = total + length, position + 2 + length
        elif opcode == 1:
            total, position = total + length, position + 3
        elif opcode == 2 and count is None:  # an indirect segment: the lengths of the segments it copies
            if eight_bit:
                b = [int(v) for v in words[position + 2:position + 6]]
                offset = (b[3] << 24 | b[2] << 16 | b[1] << 8 | b[0]) if little else (b[2] << 24 | b[3] << 16 | b[0] << 8 | b[1])
                position += 6
            else:
                offset, position = int(words[position + 3]) << 16 | int(words[position + 2]), position + 4
            total += _segments_length(words, eight_bit, little, limit - total, offset, length)  # an index, as pydicom reads it
        else:  # an unknown opcode, or an indirect segment copying another indirect one
            raise ImageInputError("The DICOM's segmented palette is damaged; refusing to decode it.")
        read += 1
    return total


def _apply_palette(pixels: np.ndarray, dataset) -> np.ndarray:
    """PALETTE COLOR indices -> RGB through the file's own palette (pydicom), or a plain refusal."""
    from pydicom.pixels import apply_color_lut

    _check_segmented_palette(dataset)
    try:
        return apply_color_lut(pixels, dataset)
    except (*_PYDICOM_ERRORS, NotImplementedError, RuntimeError):
        raise ImageInputError("The DICOM is PALETTE COLOR but its palette cannot be applied.") from None


def _first_frame(dataset) -> np.ndarray:
    """Decode frame 0 only (pydicom's ``pixel_array`` would decode every frame)."""
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(dataset, index=0)
    except (NotImplementedError, RuntimeError) as exc:
        name = _syntax_name(dataset)
        if _decoder_available(dataset):  # the codec is here, so the data is what failed (a bogus offset table, ...)
            raise ImageInputError(f"The DICOM pixel data is damaged or inconsistent with its header ({name}).") from None
        if any(word in str(exc).lower() for word in ("compress", "handler", "plugin")):
            raise ImageInputError(
                f"This DICOM uses a compression ({name}) that this installation cannot decode. "
                "Export it uncompressed or as PNG."
            ) from None
        raise ImageInputError(f"The DICOM pixel data cannot be decoded ({name}).") from None
    except (*_PYDICOM_ERRORS, MemoryError):
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.") from None


def _decoder_available(dataset) -> bool:
    """Whether this installation has a working decoder for the dataset's transfer syntax."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(_syntax(dataset)).is_available)
    except (NotImplementedError, *_PYDICOM_ERRORS):
        return False


def _apply_luts(pixels: np.ndarray, dataset) -> np.ndarray:
    """Modality then VOI LUT; a step whose header values are broken is skipped, not fatal."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    for step in (apply_modality_lut, apply_voi_lut):
        try:
            pixels = step(pixels, dataset)
        except (*_PYDICOM_ERRORS, NotImplementedError, RuntimeError, ZeroDivisionError):
            continue  # e.g. WindowWidth <= 0 or an unknown VOILUTFunction: fall back to the image's own range
    return pixels
