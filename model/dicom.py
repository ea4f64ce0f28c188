"""DICOM pixel decoding for the preprocessing path (pydicom, in memory), bounded before anything is decoded.

A small file can declare a huge image: a deflated dataset inflates without
limit, a multi-frame header multiplies the pixels, and ``pixel_array`` decodes
every frame. So the header is checked first (rows × columns × samples × bytes
of ONE frame under a budget), a deflated dataset is inflated under a byte budget
or refused, and only the first frame is ever decoded. Header values that make
no sense (non-positive or multi-valued sizes) get a plain message; a broken
window or LUT is ignored and the image is scaled by its own range instead.

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

from model.pixels import ImageInputError, rescale_to_uint8, shrink_to_side

MAX_DICOM_PIXELS = 50_000_000  # real CR/DR detectors are below 20 MP
MAX_FRAME_BYTES = 100 * 2**20  # one decoded frame
MAX_INFLATED_BYTES = 128 * 2**20  # a deflated dataset, inflated
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"

_PYDICOM_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError)


def decode_dicom(data: bytes) -> np.ndarray:
    """DICOM bytes -> 2-D uint8 grayscale with modality/VOI LUT applied, MONOCHROME1 inverted.

    pydicom's warnings can quote header values (patient fields included), so
    they are silenced here rather than logged.
    """
    _quiet_pydicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(data)


@functools.cache
def _quiet_pydicom() -> None:
    """pydicom logs header problems with their values: raise its logger to ERROR, once, on first use."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def _decode(data: bytes) -> np.ndarray:
    dataset = _read_dataset(data)
    if "PixelData" not in dataset:
        raise ImageInputError("The DICOM file contains no image (no pixel data).")
    _check_frame_size(dataset)
    pixels = _first_frame(dataset)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        pixels = _apply_luts(pixels, dataset)
    elif pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=2)
    gray = rescale_to_uint8(shrink_to_side(np.asarray(pixels)))
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is bright
        gray = 255 - gray
    return gray


def _read_dataset(data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        _check_inflated_size(data)
        return pydicom.dcmread(io.BytesIO(data))
    except ImageInputError:
        raise
    except (InvalidDicomError, zlib.error, *_PYDICOM_ERRORS):
        raise ImageInputError("The DICOM file is damaged and cannot be read.") from None


def _check_inflated_size(data: bytes) -> None:
    """Refuse a deflated dataset that inflates past the budget, before pydicom inflates all of it."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_SYNTAX:
        return
    inflater, pending, inflated = zlib.decompressobj(-zlib.MAX_WBITS), data[stream.tell():], 0
    while pending and inflated <= MAX_INFLATED_BYTES:  # count in 8 MB pieces, keep none of them
        inflated += len(inflater.decompress(pending, 8 * 2**20))
        pending = inflater.unconsumed_tail
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
    frame_bytes = rows * columns * samples * max(1, (bits + 7) // 8)
    if frame_bytes > MAX_FRAME_BYTES:
        raise ImageInputError(f"One DICOM frame would take {frame_bytes // 2**20} MB to decode; "
                              f"images above {MAX_FRAME_BYTES // 2**20} MB are not accepted.")


def _first_frame(dataset) -> np.ndarray:
    """Decode frame 0 only (pydicom's ``pixel_array`` would decode every frame)."""
    from pydicom.pixels import pixel_array

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return pixel_array(dataset, index=0)
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(syntax, "name", None) or str(syntax or "unknown")
        if any(word in str(exc).lower() for word in ("compress", "handler", "plugin")):
            raise ImageInputError(
                f"This DICOM uses a compression ({name}) that this installation cannot decode. "
                "Export it uncompressed or as PNG."
            ) from None
        raise ImageInputError(f"The DICOM pixel data cannot be decoded ({name}).") from None
    except (*_PYDICOM_ERRORS, MemoryError):
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.") from None


def _apply_luts(pixels: np.ndarray, dataset) -> np.ndarray:
    """Modality then VOI LUT; a step whose header values are broken is skipped, not fatal."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    for step in (apply_modality_lut, apply_voi_lut):
        try:
            pixels = step(pixels, dataset)
        except (*_PYDICOM_ERRORS, NotImplementedError, RuntimeError, ZeroDivisionError):
            continue  # e.g. WindowWidth <= 0 or an unknown VOILUTFunction: fall back to the image's own range
    return pixels
