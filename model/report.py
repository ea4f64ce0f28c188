"""One-page report (PNG or PDF) for one analysed image. Pure: arrays and numbers in, bytes out.

No patient identifiers are taken or printed: only pixels, the model's output
and the model's own facts.
"""

from __future__ import annotations

import io
import textwrap
from datetime import UTC, datetime

import numpy as np

from model.operating import OperatingPoint

DISCLAIMER = ("Research demo, not for clinical use. Not a medical device: it has not been validated to diagnose, "
              "treat or triage anyone. Trained on frontal pediatric chest X-rays (age 1-5) from one hospital.")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_report(original: np.ndarray, overlay: np.ndarray, probability: float, label: str,
                  point: OperatingPoint, metadata: dict, method_label: str, fmt: str = "png") -> bytes:
    """A4-portrait page: image, explanation, probability, threshold and what it means, model facts."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if fmt not in ("png", "pdf"):
        raise ValueError(f"report format must be 'png' or 'pdf', got {fmt!r}")
    figure = Figure(figsize=(8.27, 11.69))
    figure.text(0.5, 0.965, "Chest X-ray pneumonia classifier: report", ha="center", fontsize=16, weight="bold")
    figure.text(0.5, 0.945, datetime.now(UTC).strftime("generated %Y-%m-%d %H:%M UTC"), ha="center",
                fontsize=9, color="grey")
    for i, (image, title) in enumerate(((original, "Uploaded image"), (overlay, f"{method_label} explanation"))):
        ax = figure.add_axes([0.06 + 0.46 * i, 0.52, 0.42, 0.40])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    lines = [
        ("Pneumonia probability (calibrated)", f"{probability:.3f}"),
        ("Decision at threshold", f"{label}  (threshold {point.threshold:.2f})"),
        ("Sensitivity at this threshold (validation)", _percent(point.sensitivity)),
        ("Specificity at this threshold (validation)", _percent(point.specificity)),
        (f"PPV / NPV at prevalence {_percent(point.prevalence)}", f"{_percent(point.ppv)} / {_percent(point.npv)}"),
        ("Model", f"{metadata['model_name']} ({metadata['backbone']}), created {metadata['created'][:10]}"),
        ("Model file SHA-256", metadata["sha256"][:16] + "…"),
    ]
    test = metadata["metrics"].get("test")
    if test:
        lines.append(("Official test split (624 images)",
                      f"ROC AUC {test['roc_auc']:.3f}, accuracy {test['accuracy']:.3f}, "
                      f"sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f}"))
    y = 0.46
    for key, value in lines:
        figure.text(0.08, y, key, fontsize=10, color="#444444")
        figure.text(0.55, y, value, fontsize=10, weight="bold")
        y -= 0.03
    figure.text(0.08, 0.12, "\n".join(textwrap.wrap(DISCLAIMER, 95)), fontsize=9, color="#a00000", va="top")
    figure.text(0.08, 0.05, "Data: Kermany, Zhang, Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0.",
                fontsize=7, color="grey")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()
