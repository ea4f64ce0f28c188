"""The ONE preprocessing path, shared by training, evaluation, the CLI and the app.

One public entry, :func:`prepare`: file bytes -> :class:`PreparedImage` (the decoded
2-D uint8 grayscale, how colourful the source was, and the float32 (S, S, 3) model
input in [0, 1]). Training, evaluation, the CLI and the app all go through it.

The training images were made by squashing each radiograph to 224×224 (aspect
ratio not kept), so inference squashes the same way. CLAHE evens out exposure
between machines; a light blur removes JPEG/scanner grain that CLAHE would
amplify. The parameters live in :class:`PreprocessConfig`, which is stored in
every model's metadata so an artifact always carries the preprocessing it was
trained with.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from model.pixels import (  # noqa: F401 (MIN_SIDE, MAX_ASPECT_RATIO: part of this module's bounds)
    MAX_ASPECT_RATIO,
    MIN_SIDE,
    WORKING_MAX_SIDE,
    ImageInputError,
    check_geometry,
    rescale_to_uint8,
    shrink_to_side,
)

# Bounds on what a decode may cost, checked from the header before any pixel is decoded. A JPEG is
# decoded at reduced scale (draft), so its bound applies to the reduced size; other formats decode in full.
MAX_PIXELS = 120_000_000  # declared size: anything larger is refused outright
MAX_DECODED_BYTES = 96 * 2**20  # width × height × bytes per pixel of the decode actually done
MAX_FILE_BYTES = 200 * 1024 * 1024

DICOM_MAGIC_OFFSET = 128

# Identified by content, never by name: each accepted kind and the only Pillow plugins allowed to open it (an MPO is a
# JPEG with more pictures appended; Pillow's JPEG plugin returns it). Every other format Pillow knows (EPS, which
# runs Ghostscript; FITS, ICO, QOI, DDS, JPEG 2000, TGA, ...) is refused before any decoder runs.
ACCEPTED_FORMATS = "JPEG, PNG, TIFF, BMP, GIF, WebP or DICOM"
_SIGNATURES = (  # (leading bytes, kind, Pillow plugins)
    (b"\xff\xd8\xff", "JPEG", ("JPEG",)),
    (b"\x89PNG\r\n\x1a\n", "PNG", ("PNG",)),
    (b"II*\x00", "TIFF", ("TIFF",)),
    (b"MM\x00*", "TIFF", ("TIFF",)),
    (b"BM", "BMP", ("BMP",)),
    (b"GIF87a", "GIF", ("GIF",)),
    (b"GIF89a", "GIF", ("GIF",)),
)
_REFUSED_KINDS = (  # recognised only to name them in the refusal
    (b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"), (b"%PDF", "PDF"), (b"SIMPLE  =", "FITS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"\x00\x00\x01\x00", "icon (ICO)"),
    (b"\x00\x00\x02\x00", "cursor (CUR)"), (b"qoif", "QOI"), (b"DDS ", "DDS texture"), (b"8BPS", "Photoshop (PSD)"),
    (b"icns", "Apple icon (ICNS)"), (b"\x1f\x8b", "gzip archive"), (b"PK\x03\x04", "ZIP archive"),
)


@dataclass(frozen=True)
class PreparedImage:
    """One upload, decoded and preprocessed."""

    gray: np.ndarray  # the decoded image: 2-D uint8, its own aspect ratio, at most WORKING_MAX_SIDE a side
    colorfulness: float  # mean per-pixel channel spread of the source in [0, 1]; 0 for gray sources
    model_input: np.ndarray  # float32 (S, S, 3) in [0, 1], three identical channels: what the network runs on


@dataclass(frozen=True)
class PreprocessConfig:
    input_size: int = 224
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    blur_kernel: int = 3  # odd; 0 or 1 disables the blur

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        return cls(**data)


def prepare(data: bytes, config: PreprocessConfig = PreprocessConfig()) -> PreparedImage:
    """Encoded file bytes (JPEG, PNG, DICOM, ...) -> :class:`PreparedImage`, in memory.

    Honours EXIF orientation, flattens alpha onto black, maps 16-bit and float
    images to 8 bits by their own range, and reads DICOM through pydicom.
    Raises :class:`ImageInputError` with a human message for anything else.
    """
    gray, colorfulness = _decode(data)
    return PreparedImage(gray, colorfulness, _model_input(gray, config))


def _model_input(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """2-D uint8 grayscale of any size -> float32 (S, S, 3) in [0, 1], three identical channels.

    Squash-resize to S×S (INTER_AREA when shrinking), CLAHE, Gaussian blur, /255.
    Deterministic: the same pixels always give the same array.
    """
    size = config.input_size
    if gray.shape != (size, size):
        shrinking = gray.shape[0] > size or gray.shape[1] > size
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
    out = clahe.apply(gray)
    if config.blur_kernel and config.blur_kernel > 1:
        out = cv2.GaussianBlur(out, (config.blur_kernel, config.blur_kernel), 0)
    out = out.astype(np.float32) / 255.0
    return np.repeat(out[:, :, None], 3, axis=2)


def _decode(data: bytes) -> tuple[np.ndarray, float]:
    """(2-D uint8 grayscale, colorfulness) of an uploaded file, size and geometry checked."""
    if not data:
        raise ImageInputError("The file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageInputError(f"The file is larger than {MAX_FILE_BYTES // 2**20} MB.")
    kind, plugins = sniff_format(data)
    if kind in ("DICOM", "DICOM without preamble"):
        from model.dicom import decode_dicom  # pydicom is only imported when needed

        gray, colorfulness = decode_dicom(data, preamble=kind == "DICOM"), 0.0
    else:
        gray, colorfulness = _decode_with_pillow(data, plugins)
    check_geometry(gray.shape)
    return gray, colorfulness


def sniff_format(data: bytes) -> tuple[str, tuple[str, ...]]:
    """(kind, Pillow plugins allowed to open it) from the file's leading bytes; raises for anything not accepted."""
    if data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM", ()
    for signature, kind, plugins in _SIGNATURES:
        if data.startswith(signature):
            return kind, plugins
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", ("WEBP",)
    if _looks_like_bare_dicom(data):
        return "DICOM without preamble", ()
    kind = next((name for signature, name in _REFUSED_KINDS if data.startswith(signature)), None)
    if kind:
        raise ImageInputError(f"This file looks like {kind}, which is not an image format we read (we read {ACCEPTED_FORMATS}).")
    raise ImageInputError("This file is not an image we can read: whatever its name says, its contents are not "
                          f"a {ACCEPTED_FORMATS.replace(' or ', ', ')} image.")


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble: it starts with a little-endian group 0002 (file meta) or 0008
    tag, followed by an explicit VR (two capital letters) or an implicit VR's four-byte length."""
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00") or data[3] != 0:
        return False
    return data[4:6].isalpha() and data[4:6].isupper() or data[6:8] == b"\x00\x00"


def _decode_with_pillow(data: bytes, plugins: tuple[str, ...]) -> tuple[np.ndarray, float]:
    if plugins == ("TIFF",):
        check_tiff_header(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(data), formats=list(plugins))  # only the plugin the content names
            _check_pixel_count(image.size)
            check_geometry(image.size[::-1])  # the file's own size, before any decode or shrink
            _check_rle_bmp(image)
            declared, coefficients = image.size, _jpeg_coefficient_bytes(image)
            if image.format in ("JPEG", "MPO"):  # decode big JPEGs at reduced scale: fast, bounded memory
                image.draft(image.mode, (WORKING_MAX_SIDE, WORKING_MAX_SIDE))
            _check_decoded_bytes(image, coefficients, declared)
            orientation = exif_orientation(image)
            return orient(_to_uint8_gray(image), orientation), _colorfulness(image)
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError("This file is not an image we can read: whatever its name says, its contents are not "
                              "a JPEG, PNG, DICOM, TIFF, BMP, GIF or WebP image.") from None
    except Image.DecompressionBombError:
        raise ImageInputError("The image declares implausibly large dimensions; refusing to decode it.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"The image file is damaged or truncated and cannot be decoded ({type(exc).__name__}).") from None


MAX_TIFF_TABLE_ENTRIES = 100_000  # strips or tiles: a radiograph needs a few thousand at most (one row per strip)
_TIFF_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the types a size, strip or tile tag may have


def check_tiff_header(data: bytes) -> None:
    """Refuse a TIFF whose first directory declares more strips or tiles than its own size can need, before Pillow
    opens it: Pillow reads every offset into a tuple and builds one decoder record per strip while opening (7 million
    StripOffsets in a 28 MB file took 2.2 GB and a minute). Reads only the directory's 12-byte entries and the values
    stored inline in them, with ``struct``; a table is counted, never read."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        tags = {}
        for position in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, values = struct.unpack_from(order + "HHI", data, position)
            inline = struct.unpack_from(order + _TIFF_TYPES[kind], data, position + 8)[0] if kind in _TIFF_TYPES else None
            tags[tag] = (values, inline if values == 1 else None)
    except struct.error:
        raise ImageInputError("The TIFF file is damaged or truncated and cannot be decoded.") from None
    width, height = (tags.get(tag, (0, None))[1] or 0 for tag in (256, 257))
    if not (width and height):
        return  # no usable size: Pillow refuses it
    _check_pixel_count((width, height))
    planes = (tags.get(277, (1, 1))[1] or 1) if tags.get(284, (1, 1))[1] == 2 else 1
    if 324 in tags or 325 in tags:
        tile_width, tile_height = (tags.get(tag, (0, None))[1] or 0 for tag in (322, 323))
        if not tile_width or not tile_height or tile_width % 16 or tile_height % 16:
            raise ImageInputError("The TIFF file is damaged: its tile size is missing or not a multiple of 16 pixels.")
        needed, kind = -(-width // tile_width) * -(-height // tile_height) * planes, "tiles"
        listed = max(tags.get(324, (0,))[0], tags.get(325, (0,))[0])
    else:
        rows_per_strip = min(tags.get(278, (1, None))[1] or 1, height)
        needed, kind = -(-height // rows_per_strip) * planes, "strips"
        listed = max(tags.get(273, (0,))[0], tags.get(279, (0,))[0])
    if listed > needed or listed > MAX_TIFF_TABLE_ENTRIES:
        raise ImageInputError(f"The TIFF file is damaged: it lists {listed} {kind}, but an image of {width}×{height} "
                              f"pixels needs {needed}; refusing to decode it.")


MAX_RLE_BMP_PIXELS = WORKING_MAX_SIDE * WORKING_MAX_SIDE


def _check_rle_bmp(image: Image.Image) -> None:
    """Pillow expands run-length BMPs (RLE8, RLE4) in Python, padding each row a byte at a time: a 40 KB 9800² file of
    one pixel and an end-of-line per row took 23 s of CPU. Such a BMP is read up to the working size (about a second
    at worst), refused above it from the header Pillow has already parsed."""
    if image.format != "BMP" or not image.tile or image.tile[0][0] != "bmp_rle":
        return
    width, height = image.size
    if width * height > MAX_RLE_BMP_PIXELS:
        raise ImageInputError(f"The image is a run-length compressed BMP of {width}×{height} pixels; compressed BMPs "
                              f"above {WORKING_MAX_SIDE}×{WORKING_MAX_SIDE} are not accepted (save it as PNG or as an "
                              "uncompressed BMP).")


EXIF_ORIENTATION = 0x0112


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1-8; 1 when absent or not a valid value), read alone.

    Pillow's ``getexif`` keeps each tag's bytes undecoded until asked, so only this tag is decoded. (``ImageOps.
    exif_transpose`` re-serialises every tag to drop the orientation: 15 million private SHORT values took 2.6 GB.)
    """
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError, struct.error):
        return 1  # an unreadable EXIF block: shown as stored, like a file without one
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels (H, W[, C]) as stored -> as they should be shown under EXIF ``orientation`` (what ``exif_transpose``
    does, on the small decoded array, without copying or re-encoding anything else)."""
    if orientation in (5, 7):
        pixels = pixels.swapaxes(0, 1)
    elif orientation in (6, 8):
        pixels = np.rot90(pixels, -1 if orientation == 6 else 1)
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation in (3, 7):
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels)


def _check_pixel_count(size) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"The image is {width}×{height} pixels; images above {MAX_PIXELS // 1_000_000} megapixels are not accepted."
        )


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    """What libjpeg holds for a progressive JPEG whatever the draft scale: every component's DCT coefficients at full
    size (2 bytes each; counted without chroma subsampling, an upper bound). 0 for other images."""
    if image.format not in ("JPEG", "MPO") or not image.info.get("progressive"):
        return 0
    width, height = image.size
    return width * height * max(1, len(image.getbands())) * 2


def _decoded_bytes_per_pixel(image: Image.Image) -> int:
    """Bytes a pixel of the decode as it is done: RGB is stored as 4; a palette image with transparency is flattened
    through RGBA (its palette plane plus the RGBA copy)."""
    if image.mode == "P" and "transparency" in image.info:
        return 1 + 4
    return _BYTES_PER_PIXEL.get(image.mode, 4)


def _check_decoded_bytes(image: Image.Image, extra: int = 0, declared: tuple[int, int] | None = None) -> None:
    """``image.size`` is the size decoded (a JPEG's reduced draft size); the message quotes ``declared``, the file's
    own size (a 10954² progressive JPEG was described by its draft size, 2739²)."""
    width, height = image.size
    total = width * height * _decoded_bytes_per_pixel(image) + extra
    if total > MAX_DECODED_BYTES:
        width, height = declared or image.size
        raise ImageInputError(
            f"The image is {width}×{height} pixels ({image.mode}{', progressive' if extra else ''}): decoding it would "
            f"take {total // 2**20} MB; images above {MAX_DECODED_BYTES // 2**20} MB decoded are not "
            "accepted (a chest X-ray fits easily; try a baseline JPEG or a smaller export).")


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> 2-D uint8 grayscale."""
    # Animated or multi-page: the file is open at its first frame, which is the one used (n_frames is never asked:
    # for a GIF it would walk every frame).
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return rescale_to_uint8(shrink_to_side(np.asarray(image)))
    return shrink_to_side(np.asarray(image.convert("L"), dtype=np.uint8)).copy()


def _flatten_alpha(image: Image.Image) -> np.ndarray:
    """Grey × alpha (transparent parts onto black), shrunk; two one-byte planes instead of RGBA copies."""
    if image.mode == "P":
        image = image.convert("RGBA")
    alpha = shrink_to_side(np.asarray(image.getchannel("A"), dtype=np.uint8))
    gray = shrink_to_side(np.asarray(image.convert("L"), dtype=np.uint8))
    return (gray.astype(np.uint16) * alpha // 255).astype(np.uint8)


def _colorfulness(image: Image.Image) -> float:
    """Mean (max - min) over the RGB channels of a small copy, in [0, 1]; 0 for grey modes."""
    if image.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return 0.0
    small = image.copy()
    small.thumbnail((128, 128))
    rgb = np.asarray(small.convert("RGB"), dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean() / 255.0)


def colour_preview(data: bytes, max_side: int) -> np.ndarray | None:
    """uint8 RGB copy of a colour upload, at most ``max_side`` a side, for showing what was uploaded; None for a
    file that is not a colour image Pillow can read (DICOM, grey, unreadable). Bounded like :func:`prepare`."""
    if not data or len(data) > MAX_FILE_BYTES:
        return None
    try:
        _, plugins = sniff_format(data)
        if not plugins:  # DICOM: grey by definition here
            return None
        if plugins == ("TIFF",):
            check_tiff_header(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(plugins))  # the same content check as prepare()
            _check_pixel_count(image.size)
            _check_rle_bmp(image)
            declared, coefficients = image.size, _jpeg_coefficient_bytes(image)
            image.draft("RGB", (max_side, max_side))
            _check_decoded_bytes(image, coefficients, declared)
            if image.mode in ("L", "I", "I;16", "F", "1"):
                return None
            orientation = exif_orientation(image)
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side))
            return orient(np.asarray(image), orientation)
    except (ImageInputError, UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return None
