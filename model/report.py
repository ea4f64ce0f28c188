"""One-page report (PNG or PDF) for one analysed image. Pure: arrays and numbers in, bytes out.

No patient identifiers are taken or printed: only the name the user gave the
file, pixels, the model's output and the model's own facts. Every line is
wrapped to the page, so nothing is clipped. Text is never parsed as mathtext or
TeX (a file name like ``$\\mathbf{...}$`` prints as typed), and a long file name
is shortened to its start and end.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from model.artifact import ModelMetadata
from model.faithfulness import FaithfulnessResult
from model.operating_point import OperatingPoint

DISCLAIMER = ("Research demo, not for clinical use. Not a medical device: it has not been validated to diagnose, "
              "treat or triage anyone. Trained on frontal pediatric chest X-rays (age 1-5) from one hospital.")
CITATION = "Data: Kermany, Zhang, Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0."
KEY_WIDTH, VALUE_WIDTH = 32, 50  # characters per line of each column at the report's font size
MAX_FILE_NAME_CHARS = 120  # a longer name is shown as its first and last characters
NOT_A_DIAGNOSIS = "not a diagnosis of this image"  # beside every output shown against the gate's advice
PLAIN = {"parse_math": False, "usetex": False}  # every text artist: user text is never mathtext or TeX


def short_name(name: str, limit: int = MAX_FILE_NAME_CHARS) -> str:
    """``name`` if short enough, else its start and end around an ellipsis (at most ``limit`` characters)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) * 2 // 3
    return name[:head] + "…" + name[len(name) - (limit - 1 - head):]


@dataclass(frozen=True)
class ReportContent:
    file_name: str
    original: np.ndarray  # uint8 gray or RGB
    overlay: np.ndarray  # uint8 RGB
    method_label: str
    probability: float
    label: str
    point: OperatingPoint  # at the threshold used
    metadata: ModelMetadata
    gate: str  # the out-of-distribution gate's verdict, in words
    unreliable: str | None = None  # set when the output was shown although the gate flagged the image
    cautions: tuple[str, ...] = ()
    faithfulness: FaithfulnessResult | None = None  # the deletion check of the map shown
    explained_class: str = "PNEUMONIA"  # the class the map shows evidence for
    map_note: str | None = None  # how the map is scaled, and whether it shows little evidence anywhere
    trust: str | None = None  # how far to trust this output, and why, in one line (model.service.Trust.text)
    about_output: bool = True  # the map is the one the trust verdict checks (shown first, the call's own class)


def plain_summary(metadata: ModelMetadata) -> str:
    """The model card's plain-language opening (the app's card tab shows the same words), from recorded figures."""
    test = metadata.metrics.test
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
    lines = [
        ("File", short_name(c.file_name)),
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Pneumonia probability (calibrated)", f"{c.probability:.3f}"
         + (f"  (UNRELIABLE: {NOT_A_DIAGNOSIS})" if c.unreliable else "")),
        ("Decision at threshold", f"{c.label} (threshold {point.threshold:.3f})") if not c.unreliable else
        ("Model's output, shown anyway", f"would read {c.label} at threshold {point.threshold:.3f}; shown against the "
                                         f"gate's advice, so {NOT_A_DIAGNOSIS}"),
        ("Population gate", c.gate),
    ]
    if c.trust:
        lines.append(("How far to trust this", c.trust))
    elif not c.unreliable:
        lines += [("Caution", note) for note in c.cautions]
    if c.map_note:
        lines.append(("Heatmap", c.map_note))
    if c.faithfulness is not None:
        subject = "this output" if c.about_output else f"the evidence for {c.explained_class.lower()} it shows"
        sentence, _ = c.faithfulness.describe(c.explained_class, subject)
        heading = "Does the map explain the output?" if c.about_output else "Does this map explain what it shows?"
        lines.append((heading, f"{sentence} ({c.faithfulness.summary()})"))
    where = "official test split" if point.held_out else "validation split"
    lines += [
        (f"Sensitivity / specificity at this threshold, measured on the {where}",
         f"{_percent(point.sensitivity)} / {_percent(point.specificity)} on the {point.source}"),
        (f"PPV / NPV at prevalence {_percent(point.prevalence)}", f"{_percent(point.ppv)} / {_percent(point.npv)}"),
        ("Model", f"{meta.model_name} version {meta.model_version} ({meta.backbone}), created {meta.created[:10]}"),
        ("Model file SHA-256", meta.sha256),
    ]
    test = meta.metrics.test
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
    figure.text(0.5, 0.965, "Chest X-ray pneumonia classifier: report", ha="center", fontsize=16, weight="bold", **PLAIN)
    top = 0.93
    if content.unreliable:
        warning = "\n".join(textwrap.wrap(content.unreliable, 95))
        figure.text(0.5, 0.945, warning, ha="center", va="top", fontsize=9, weight="bold", color="#b00000", **PLAIN)
        top -= 0.0135 * warning.count("\n") + 0.01
    panels = ((content.original, "Uploaded image"), (content.overlay, f"{content.method_label} explanation"))
    for i, (image, title) in enumerate(panels):
        ax = figure.add_axes([0.06 + 0.46 * i, top - 0.30, 0.42, 0.27])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=10, **PLAIN)
        ax.axis("off")
    _text_block(figure, report_lines(content), top - 0.33)
    figure.text(0.06, 0.085, "\n".join(textwrap.wrap(DISCLAIMER, 100)), fontsize=8.5, color="#a00000", va="top", **PLAIN)
    figure.text(0.06, 0.03, CITATION, fontsize=7, color="grey", **PLAIN)
    return figure


def _text_block(figure, lines: list[tuple[str, str]], top: float, bottom: float = 0.10) -> None:
    """Key/value lines from ``top`` down, wrapped; the font shrinks until the block ends above ``bottom``."""
    for fontsize in (9.0, 8.0, 7.0, 6.0):
        scale = 9.0 / fontsize  # smaller type: more characters a line, less height a line
        wrapped = [(textwrap.wrap(k, int(KEY_WIDTH * scale)), textwrap.wrap(v, int(VALUE_WIDTH * scale), break_long_words=True))
                   for k, v in lines]
        line_height = 0.0155 * fontsize / 9.0
        height = sum(line_height * max(len(k), len(v)) + 0.006 for k, v in wrapped)
        if top - height >= bottom or fontsize == 6.0:
            break
    y = top
    for (keys, values), (_, value) in zip(wrapped, lines):
        color = "#b00000" if "UNRELIABLE" in value else "black"
        figure.text(0.06, y, "\n".join(keys), fontsize=fontsize, color="#444444", va="top", **PLAIN)
        figure.text(0.40, y, "\n".join(values), fontsize=fontsize, weight="bold", color=color, va="top", **PLAIN)
        y -= line_height * max(len(keys), len(values)) + 0.006
