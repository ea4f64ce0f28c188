"""Shared fixtures: generated images, DICOM files and a tiny trained model (no dataset needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "app" / "samples"


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def synthetic_xray(seed: int = 0, size=(256, 300), pneumonia: bool = False) -> np.ndarray:
    """A chest-like uint8 image: dark lungs in a bright body; pneumonia adds a bright patch."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    body = 170 - 60 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    for cx in (0.32, 0.68):
        body -= 90 * np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.28) ** 2))
    if pneumonia:
        cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.65)
        body += 80 * np.exp(-(((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.1) ** 2))
    body += rng.normal(0, 6, size)
    return np.clip(body, 0, 255).astype(np.uint8)


def make_dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", with_pixels: bool = True,
               transfer_syntax=None, patient_name: str = "Doe^Jane") -> bytes:
    """A minimal valid DICOM file in memory, with identifying patient fields."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_name
    ds.PatientID = "SECRET-12345"
    ds.PatientBirthDate = "20200101"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def xray_png() -> bytes:
    return encode(Image.fromarray(synthetic_xray(1)))


@pytest.fixture(scope="session")
def sample_files() -> list[Path]:
    files = sorted(SAMPLES.glob("*.jpeg"))
    assert files, "committed sample X-rays are missing from app/samples"
    return files


def write_tiny_dataset(root: Path, per_class: int = 16) -> Path:
    """A dataset folder in the Kermany layout, with patients owning one or two images."""
    for split in ("train", "test"):
        for label, name in enumerate(("NORMAL", "PNEUMONIA")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                patient, image = i // 2 + 1, i % 2 + 1
                stem = f"IM-{patient:04d}-{image:04d}" if label == 0 else f"person{patient}_bacteria_{i}"
                pixels = synthetic_xray(seed=1000 * label + i + (0 if split == "train" else 500),
                                        size=(96, 96), pneumonia=bool(label))
                Image.fromarray(pixels).save(folder / f"{stem}.jpeg", quality=95)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> Path:
    """Train a tiny randomly initialised Lite0 at 64 px for one epoch per stage: a real, small artifact."""
    from training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(data=str(tiny_dataset), out=str(out), weights="none", input_size=64, batch_size=8,
                         stage1_epochs=1, stage2_epochs=1, unfreeze_blocks="all", val_fraction=0.25, seed=3,
                         mixup_alpha=0.2)
    return train(config)


@pytest.fixture
def started_processes(monkeypatch) -> list:
    """Every way to start a program made to fail loudly for the test; the list records each attempt (it must stay
    empty: Pillow's EPS plugin runs Ghostscript, ``ctypes.util.find_library`` runs ``ldconfig``)."""
    import subprocess

    started = []

    def refuse(*args, **kwargs):
        started.append(args[:1])
        raise AssertionError("tried to start a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    return started
