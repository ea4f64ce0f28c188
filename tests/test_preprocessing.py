"""The one preprocessing path: formats, determinism, shapes and ranges, and clear errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from conftest import encode, make_dicom, synthetic_xray
from PIL import Image

from model.preprocessing import ImageInputError, PreprocessConfig, prepare


def decode_image(data: bytes) -> np.ndarray:
    return prepare(data).gray


def preprocess_array(gray: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """The model input of an 8-bit gray array, through the one public entry (PNG is lossless)."""
    return prepare(encode(Image.fromarray(gray)), config or PreprocessConfig()).model_input


def _assert_model_input(x, size=224):
    assert x.shape == (size, size, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x[:, :, 0], x[:, :, 1]) and np.array_equal(x[:, :, 0], x[:, :, 2])


def test_output_contract_and_determinism(xray_png):
    first, second = prepare(xray_png).model_input, prepare(xray_png).model_input
    _assert_model_input(first)
    assert np.array_equal(first, second)
    assert first.std() > 0.05  # CLAHE keeps contrast


def test_squashes_rather_than_pads():
    wide = np.zeros((200, 400), np.uint8)
    wide[:, 200:] = 255  # right half white: after a squash it is still the right half
    x = preprocess_array(wide)
    assert x[:, :100, 0].mean() < 0.2 and x[:, 124:, 0].mean() > 0.8
    assert x[:8].mean() > 0.3  # no black padding bands at the top


def test_training_sized_jpeg_is_not_resized(sample_files):
    data = sample_files[0].read_bytes()
    prepared = prepare(data, PreprocessConfig(blur_kernel=0, clahe_clip_limit=0.01))
    assert prepared.gray.shape == (224, 224) and prepared.model_input.shape == (224, 224, 3)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA", "LA", "CMYK"])
def test_pillow_modes_decode_to_gray(mode):
    base = Image.fromarray(synthetic_xray(2))
    image = base.convert(mode)
    fmt = "JPEG" if mode in ("CMYK",) else "PNG"
    gray = decode_image(encode(image, fmt))
    assert gray.ndim == 2 and gray.dtype == np.uint8
    assert abs(float(gray.mean()) - float(np.asarray(base).mean())) < 12


def test_sixteen_bit_png_uses_its_full_range():
    pixels = (synthetic_xray(3).astype(np.uint16) * 64 + 500)
    gray = decode_image(encode(Image.fromarray(pixels)))
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    assert np.corrcoef(gray.ravel(), pixels.ravel())[0, 1] > 0.99


def test_exif_orientation_is_honoured():
    pixels = synthetic_xray(4, size=(200, 120))  # portrait
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° turn
    gray = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert gray.shape == (120, 200)


def test_animated_gif_uses_first_frame():
    frames = [Image.fromarray(synthetic_xray(s)) for s in (5, 6)]
    buffer = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer).shape == (256, 300)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_monochrome(photometric):
    pixels = synthetic_xray(7).astype(np.uint16) * 16
    gray = decode_image(make_dicom(pixels, photometric))
    correlation = np.corrcoef(gray.ravel().astype(float), pixels.ravel().astype(float))[0, 1]
    assert correlation > 0.99 if photometric == "MONOCHROME2" else correlation < -0.99


def _png_with_declared_size(width, height) -> bytes:
    data = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = 8 + 8  # signature + chunk length/type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, this is text renamed to .png", "not an image we can read"),
    (encode(Image.fromarray(synthetic_xray(8)), "JPEG")[:600], "damaged or truncated"),
    (_png_with_declared_size(100_000, 100_000), "implausibly large"),
    (_png_with_declared_size(12_000, 11_000), "megapixels"),
    (encode(Image.new("L", (1, 1))), "at least"),
    (encode(Image.new("L", (1000, 100))), "too elongated"),
    (make_dicom(np.zeros((64, 64), np.uint16), with_pixels=False), "no pixel data"),
], ids=["empty", "text", "truncated-jpeg", "bomb", "132-megapixels", "1x1", "aspect", "dicom-no-pixels"])
def test_bad_inputs_raise_human_messages(data, message):
    with pytest.raises(ImageInputError, match=message):
        prepare(data)


def test_config_round_trip():
    config = PreprocessConfig(input_size=128, clahe_clip_limit=3.0)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    _assert_model_input(preprocess_array(synthetic_xray(9), config), 128)
