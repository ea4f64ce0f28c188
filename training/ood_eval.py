"""Measure the out-of-distribution gate: rejection of non-X-rays, false rejection of real X-rays.

Non-X-ray corpus (generated, seeded, nothing downloaded): every photograph
scikit-image ships, in colour and in grey, whole and as crops; Gaussian and
uniform noise; rendered text; blank and near-blank images; gradients and
checkerboards. In-distribution: a folder split of real X-rays (the official
test split when reporting).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.predictor import Predictor
from model.preprocessing import ImageInputError
from model.service import analyze_bytes
from training import data as data_lib

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "horse", "coins", "moon", "page", "text",
                  "clock", "immunohistochemistry", "hubble_deep_field", "logo", "cat", "brick", "grass", "gravel",
                  "colorwheel", "retina", "skin", "eagle", "binary_blobs")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _photos(rng) -> list[tuple[str, bytes]]:
    from skimage import data as skdata

    items = []
    for name in SKIMAGE_PHOTOS:
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception as exc:  # some need an optional download; skip what is not bundled
            log.info("skipping skimage.data.%s: %s", name, type(exc).__name__)
            continue
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = np.clip(image / max(float(image.max()), 1e-9) * 255, 0, 255).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        gray = image if image.ndim == 2 else np.asarray(Image.fromarray(image).convert("L"))
        h, w = gray.shape
        variants = [("photo", image), ("photo_gray", gray)]
        for _i in range(3):  # random crops of half the size, grey (the hard case: no colour cue)
            y, x = rng.integers(0, h // 2 + 1), rng.integers(0, w // 2 + 1)
            variants.append(("photo_gray_crop", gray[y:y + h // 2, x:x + w // 2]))
        items += [(f"{kind}:{name}", _png(np.ascontiguousarray(v))) for kind, v in variants if min(v.shape[:2]) >= 32]
    return items


def _synthetic(rng, n_each: int = 20) -> list[tuple[str, bytes]]:
    items = []
    for _i in range(n_each):
        size = (int(rng.integers(200, 600)), int(rng.integers(200, 600)))
        items.append(("noise_gaussian", _png(np.clip(rng.normal(128, 40, size), 0, 255).astype(np.uint8))))
        items.append(("noise_uniform", _png(rng.integers(0, 256, size, dtype=np.uint8))))
        items.append(("noise_colour", _png(rng.integers(0, 256, (*size, 3), dtype=np.uint8))))
        items.append(("blank", _png(np.full(size, int(rng.integers(0, 256)), np.uint8))))
        items.append(("near_blank", _png(np.clip(rng.normal(int(rng.integers(20, 235)), 2, size), 0, 255).astype(np.uint8))))
        text = Image.new("L", (size[1], size[0]), int(rng.integers(180, 256)))
        draw = ImageDraw.Draw(text)
        for line in range(0, size[0], 14):
            draw.text((5, line), "The quick brown fox jumps over the lazy dog 0123456789" * 2, fill=int(rng.integers(0, 80)))
        items.append(("text", _png(np.asarray(text))))
        yy, xx = np.mgrid[0:size[0], 0:size[1]]
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
        items.append(("gradient", _png((255 * (ramp - ramp.min()) / np.ptp(ramp)).astype(np.uint8))))
        cell = int(rng.integers(8, 64))
        items.append(("checkerboard", _png((((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8))))
    return items


def non_xray_corpus(seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    return _photos(rng) + _synthetic(rng)


def served_prediction(predictor, data: bytes):
    """The app's own path for one file (decode, preprocess, LiteRT, gate); None when the file is refused before
    the model (unreadable: never diagnosed either)."""
    try:
        return analyze_bytes(predictor, data).prediction
    except ImageInputError:
        return None


def _rejected(predictor, data: bytes) -> tuple[bool, str]:
    prediction = served_prediction(predictor, data)
    if prediction is None:
        return True, "unreadable"
    verdict = prediction.ood
    return (not verdict.in_distribution), ",".join(verdict.reasons) or "accepted"


def evaluate_ood(model: str, data: str, out: str, split: str = "test") -> dict:
    predictor = Predictor.load(model)
    by_kind: dict[str, list[bool]] = {}
    reasons: dict[str, int] = {}
    for name, blob in non_xray_corpus():
        rejected, why = _rejected(predictor, blob)
        by_kind.setdefault(name.split(":")[0], []).append(rejected)
        reasons[why] = reasons.get(why, 0) + 1
    flagged = [_rejected(predictor, e.path.read_bytes())[0] for e in data_lib.list_split(data, split)]
    all_rejections = [r for values in by_kind.values() for r in values]
    report = {
        "model_sha256": predictor.metadata.sha256,
        "threshold": predictor.ood.threshold,
        "threshold_rule": predictor.metadata.ood.get("threshold_rule"),
        "non_xray": {"n": len(all_rejections), "rejection_rate": float(np.mean(all_rejections)),
                     "by_kind": {k: {"n": len(v), "rejection_rate": float(np.mean(v))} for k, v in sorted(by_kind.items())},
                     "by_reason": reasons},
        "xray": {"split": split, "n": len(flagged), "false_rejection_rate": float(np.mean(flagged)),
                 "false_rejections": int(np.sum(flagged))},
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    log.info("OOD gate: %.1f%% of %d non-X-rays rejected; %.2f%% of %d %s X-rays falsely rejected",
             100 * report["non_xray"]["rejection_rate"], len(all_rejections),
             100 * report["xray"]["false_rejection_rate"], len(flagged), split)
    return report
