"""One-page report (PNG or PDF) for one analysed image. Pure: arrays and numbers in, bytes out.

No patient identifiers are taken or printed: only the name the user gave the
file, pixels, the model's output and the model's own facts. Every line is
wrapped to the page, so nothing is clipped.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from model.operating import OperatingPoint

DISCLAIMER = ("Research demo, not for clinical use. Not a medical device: it has not been validated to diagnose, "
              "treat or triage anyone. Trained on frontal pediatric chest X-rays (age 1-5) from one hospital.")
CITATION = "Data: Kermany, Zhang, Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0."
KEY_WIDTH, VALUE_WIDTH = 32, 50  # characters per line of each column at the report's font size


@dataclass(frozen=True)
class ReportContent:
    file_name: str
    original: np.ndarray  # uint8 gray or RGB
    overlay: np.ndarray  # uint8 RGB
    method_label: str
    probability: float
    label: str
    point: OperatingPoint  # at the threshold used
    metadata: dict
    gate: str  # the out-of-distribution gate's verdict, in words
    unreliable: str | None = None  # set when the output was shown although the gate flagged the image
    cautions: tuple[str, ...] = ()


def plain_summary(metadata: dict) -> str:
    """The model card's plain-language opening (the app's card tab shows the same words), from recorded figures."""
    test = metadata["metrics"].get("test")
    how_good = ("No held-out figures are recorded for this model." if not test else
                f"On the official test split ({test['n']} X-rays of patients it never saw) it ranks a pneumonia "
                f"X-ray above a normal one {test['roc_auc']:.1%} of the time (ROC AUC); at the default threshold it "
                f"finds {test['sensitivity']:.0%} of pneumonia cases and clears {test['specificity']:.0%} of normal "
                f"X-rays (accuracy {test['accuracy']:.0%}).")
    return ("**In short.** A research model that reads a frontal chest X-ray of a young child (1–5 years) and gives a "
            f"calibrated probability of pneumonia, with a map of where its evidence lies. {how_good} It was trained on "
            "one hospital's images; elsewhere it may do worse. **It must not be used** to diagnose, treat or triage "
            "anyone, on adults or infants, on views other than frontal, or on anything but an X-ray.")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report_lines(c: ReportContent) -> list[tuple[str, str]]:
    """(key, value) pairs, in page order."""
    meta, point = c.metadata, c.point
    version = meta.get("model_version", "1")
    lines = [
        ("File", c.file_name),
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Pneumonia probability (calibrated)", f"{c.probability:.3f}" + ("  (UNRELIABLE)" if c.unreliable else "")),
        ("Decision at threshold", f"{c.label} (threshold {point.threshold:.3f})"),
        ("Out-of-distribution gate", c.gate),
    ]
    if c.unreliable:
        lines.append(("Warning", c.unreliable))
    lines += [("Caution", note) for note in c.cautions]
    lines += [
        ("Sensitivity / specificity here", f"{_percent(point.sensitivity)} / {_percent(point.specificity)} on the {point.source}"),
        (f"PPV / NPV at prevalence {_percent(point.prevalence)}", f"{_percent(point.ppv)} / {_percent(point.npv)}"),
        ("Model", f"{meta['model_name']} version {version} ({meta['backbone']}), created {meta['created'][:10]}"),
        ("Model file SHA-256", meta["sha256"]),
    ]
    test = meta["metrics"].get("test")
    if test:
        n = test.get("n") or sum(len(v) for v in test.get("scores", {}).values()) or "?"
        lines.append(("Official test split", f"{n} images: ROC AUC {test['roc_auc']:.3f}; at the default threshold "
                                              f"accuracy {test['accuracy']:.3f}, sensitivity {test['sensitivity']:.3f}, "
                                              f"specificity {test['specificity']:.3f}"))
    return lines


def render_report(content: ReportContent, fmt: str = "png") -> bytes:
    """The page as PNG or PDF bytes."""
    if fmt not in ("png", "pdf"):
        raise ValueError(f"report format must be 'png' or 'pdf', got {fmt!r}")
    buffer = io.BytesIO()
    report_figure(content).savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()


def report_figure(content: ReportContent):
    """A4-portrait page: image, explanation, probability, threshold and what it means, model facts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the object API: no global backend switch
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.27, 11.69))
    FigureCanvasAgg(figure)
    figure.text(0.5, 0.965, "Chest X-ray pneumonia classifier: report", ha="center", fontsize=16, weight="bold")
    if content.unreliable:
        figure.text(0.5, 0.94, "UNRELIABLE OUTPUT: the image is unlike the X-rays the model was trained on",
                    ha="center", fontsize=11, weight="bold", color="#b00000")
    panels = ((content.original, "Uploaded image"), (content.overlay, f"{content.method_label} explanation"))
    for i, (image, title) in enumerate(panels):
        ax = figure.add_axes([0.06 + 0.46 * i, 0.58, 0.42, 0.34])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    y = 0.55
    for key, value in report_lines(content):
        keys, values = textwrap.wrap(key, KEY_WIDTH), textwrap.wrap(value, VALUE_WIDTH, break_long_words=True)
        colour = "#b00000" if key == "Warning" or "UNRELIABLE" in value else "black"
        figure.text(0.06, y, "\n".join(keys), fontsize=9, color="#444444", va="top")
        figure.text(0.40, y, "\n".join(values), fontsize=9, weight="bold", color=colour, va="top")
        y -= 0.0155 * max(len(keys), len(values)) + 0.008
    figure.text(0.06, min(y, 0.11), "\n".join(textwrap.wrap(DISCLAIMER, 100)), fontsize=9, color="#a00000", va="top")
    figure.text(0.06, 0.03, CITATION, fontsize=7, color="grey")
    return figure
