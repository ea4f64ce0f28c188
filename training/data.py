"""Dataset listing, patient ids, the patient-level validation split, and loading.

Layout: ``DIR/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg``. File names carry the
patient: ``IM-0115-0001.jpeg``, ``NORMAL2-IM-0381-0001.jpeg``,
``person1000_bacteria_2931.jpeg``. Several images can belong to one patient,
so the validation split groups by patient: no patient is on both sides.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import CLASS_NAMES
from model.preprocessing import ImageInputError, PreprocessConfig, prepare

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
_PATIENT_PATTERNS = (
    re.compile(r"^(NORMAL2-IM-\d+)-\d+$"),
    re.compile(r"^(IM-\d+)-\d+$"),
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+$"),
)


@dataclass(frozen=True)
class Example:
    path: Path
    label: int  # 0 NORMAL, 1 PNEUMONIA
    patient: str


def patient_id(path: str | Path) -> str:
    """Patient id from a Kermany file name; unknown patterns count as their own patient."""
    stem = Path(path).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def list_split(data_dir: str | Path, split: str) -> list[Example]:
    """All images of ``data_dir/split`` as sorted :class:`Example` s (sorted: reproducible)."""
    root = Path(data_dir) / split
    examples = []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"expected a folder {folder} (layout: {split}/NORMAL, {split}/PNEUMONIA)")
        examples += [Example(p, label, patient_id(p)) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not examples:
        raise FileNotFoundError(f"no images found under {root}")
    return examples


def patient_split(examples: list[Example], val_fraction: float = 0.15, seed: int = 42):
    """(train, validation): stratified by label, grouped by patient, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1.0 / val_fraction))
    labels = np.array([e.label for e in examples])
    groups = np.array([e.patient for e in examples])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(examples)), labels, groups))
    return [examples[i] for i in train_idx], [examples[i] for i in val_idx]


def load_images(examples: list[Example], config: PreprocessConfig):
    """Preprocess every example through the shared path -> (float32 (N, S, S, 1), int labels, examples kept).

    One channel is kept in memory (the three model channels are identical) and
    expanded in the input pipeline. Unreadable files are skipped with a warning.
    """
    size = config.input_size
    images = np.empty((len(examples), size, size, 1), np.float32)
    keep = []
    for i, example in enumerate(examples):
        try:
            images[i] = prepare(example.path.read_bytes(), config).model_input[:, :, :1]
            keep.append(i)
        except ImageInputError as exc:
            log.warning("skipping %s: %s", example.path.name, exc)
        if (i + 1) % 1000 == 0:
            log.info("preprocessed %d/%d images", i + 1, len(examples))
    kept = [examples[i] for i in keep]
    return images[keep], np.array([e.label for e in kept], np.int32), kept


def fingerprint(examples: list[Example]) -> dict:
    """Counts and a hash of the sorted relative file names: identifies the data a model saw."""
    names = sorted(f"{CLASS_NAMES[e.label]}/{e.path.name}" for e in examples)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    counts = {name: sum(e.label == i for e in examples) for i, name in enumerate(CLASS_NAMES)}
    return {"images": len(examples), "patients": len({e.patient for e in examples}),
            "per_class": counts, "names_sha256": digest}
