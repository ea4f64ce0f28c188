"""Counter-examples for the population gate: real X-rays that are not the model's population (outlier exposure).

Layout (``../shared/data/external`` is one): ``OUTSIDE/SOURCE/metadata.csv``, one
row per image, with a ``file`` column relative to that CSV's folder. A source
whose CSV has a ``body_part`` column holds X-rays of another body part; any
other source holds chest X-rays of people outside the population. Rows with a
``patient_age`` under ``ADULT_AGE`` are children of another hospital: not the
model's population, and not adults either, so they are taught as their own kind
(``child_chest``), never as "adult".
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.preprocessing import ImageInputError, PreprocessConfig, prepare

log = logging.getLogger(__name__)

ADULT_AGE = 18
INVERTED_PER_FIT = 1500  # inverted copies of training X-rays taught as "inverted"


@dataclass(frozen=True)
class OutsideImage:
    path: Path
    source: str  # the SOURCE folder: leave-one-source-out validation holds these out one at a time
    kind: str  # "adult_chest", "child_chest" or "other_body_part" (model.ood.POPULATION_CLASSES)
    age: float | None  # years, when the source records it
    label: str  # the source's own finding (NORMAL, PNEUMONIA, ...) or the body part

    @property
    def group(self) -> str:
        """The row of the report this image counts in."""
        if self.kind == "other_body_part":
            return "other body part"
        if self.age is not None and self.age < ADULT_AGE:
            return "child aged 6-17" if self.age >= 6 else "child under 6"
        return f"adult {self.label.lower()}"


def list_outside(root: str | Path) -> list[OutsideImage]:
    """Every image listed by ``root/*/metadata.csv``, sorted (reproducible)."""
    images = []
    for table in sorted(Path(root).glob("*/metadata.csv")):
        source = table.parent.name
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                body_part = row.get("body_part")
                age = float(row["patient_age"]) if row.get("patient_age") else None
                if body_part and body_part.lower() != "chest":
                    kind = "other_body_part"
                else:
                    kind = "child_chest" if age is not None and age < ADULT_AGE else "adult_chest"
                images.append(OutsideImage(table.parent / row["file"], source, kind, age,
                                           body_part or row.get("label") or "unlabelled"))
    if not images:
        raise FileNotFoundError(f"no */metadata.csv with images under {root}")
    return sorted(images, key=lambda i: str(i.path))


def load_outside(images: list[OutsideImage], config: PreprocessConfig) -> tuple[np.ndarray, list[OutsideImage]]:
    """Preprocess through the shared path -> (float32 (N, S, S, 1), images kept)."""
    arrays, kept = [], []
    for image in images:
        try:
            arrays.append(prepare(image.path.read_bytes(), config).model_input[:, :, :1])
            kept.append(image)
        except ImageInputError as exc:
            log.warning("skipping %s: %s", image.path.name, exc)
    size = config.input_size
    return (np.stack(arrays) if arrays else np.empty((0, size, size, 1), np.float32)), kept


def counter_examples(root: str | Path | None, config: PreprocessConfig) -> dict[str, np.ndarray] | None:
    """Population class -> images to fit the gate with: every image of ``root`` by kind; None without a
    folder (the gate is then the feature distance alone)."""
    if not root:
        return None
    images, kept = load_outside(list_outside(root), config)
    kinds = np.array([i.kind for i in kept])
    log.info("counter-examples from %s: %s", root, {k: int(np.sum(kinds == k)) for k in sorted(set(kinds))})
    return {kind: images[kinds == kind] for kind in sorted(set(kinds))}


def inverted_copies(x_train: np.ndarray, n: int = INVERTED_PER_FIT, seed: int = 0) -> np.ndarray:
    """Negatives of a seeded subset of training X-rays (the model input is in [0, 1]: 1 - x)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x_train), min(n, len(x_train)), replace=False))
    return 1.0 - x_train[pick]
