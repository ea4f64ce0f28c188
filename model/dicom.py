"""DICOM pixel decoding for the preprocessing path (pydicom, in memory).

Only pixels leave this module: patient and study fields are never read out,
returned or logged.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

from model.preprocessing import ImageInputError, rescale_to_uint8, shrink_to_working_size

MAX_DICOM_PIXELS = 50_000_000  # real CR/DR detectors are below 20 MP


def decode_dicom(data: bytes) -> np.ndarray:
    """DICOM bytes -> 2-D uint8 grayscale with modality/VOI LUT applied, MONOCHROME1 inverted.

    pydicom's warnings can quote header values (patient fields included), so
    they are silenced here rather than logged.
    """
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(data)


def _decode(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
        raise ImageInputError("The DICOM file is damaged and cannot be read.") from None
    if "PixelData" not in dataset:
        raise ImageInputError("The DICOM file contains no image (no pixel data).")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows * columns > MAX_DICOM_PIXELS:
        raise ImageInputError(f"The DICOM image is {columns}×{rows} pixels; too large to process.")
    pixels = _pixel_array(dataset)
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1 and pixels.ndim >= 3:
        pixels = pixels[0]
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        pixels = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
    gray = rescale_to_uint8(shrink_to_working_size(np.asarray(pixels)))
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is bright
        gray = 255 - gray
    return gray


def _pixel_array(dataset) -> np.ndarray:
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(syntax, "name", None) or str(syntax or "unknown")
        if "compress" in str(exc).lower() or "handler" in str(exc).lower() or "plugin" in str(exc).lower():
            raise ImageInputError(
                f"This DICOM uses a compression ({name}) that this installation cannot decode. "
                "Export it uncompressed or as PNG."
            ) from None
        raise ImageInputError(f"The DICOM pixel data cannot be decoded ({name}).") from None
    except (ValueError, AttributeError, KeyError, TypeError, IndexError, EOFError):
        raise ImageInputError("The DICOM pixel data is damaged or inconsistent with its header.") from None
