"""The use-case layer: from an uploaded file to everything the app and the CLI show, with no Streamlit in sight.

The app caches these results per image, so moving the threshold or the overlay
opacity never runs the network again. Each result holds little: a display copy
of at most ``DISPLAY_MAX_SIDE`` and the model input as uint8 (the preprocessing
ends in uint8 / 255, so nothing is lost), not full-resolution arrays.

User-supplied text (file names) is data, never markup: :func:`safe_download_name`
and :func:`rows_to_csv` make it harmless for file systems and spreadsheets; the
app shows it as plain text.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import ModelMetadata
from model.explain import CAM_METHODS, DEFAULT_METHOD, CamExplainer, EvidenceMap
from model.faithfulness import FaithfulnessResult, deletion_check
from model.forward_pass import ForwardPass
from model.ood import NEAR_LIMIT_WORDS, OodVerdict, image_stats
from model.pixels import shrink_to_side
from model.predictor import Predictions, Predictor, label_for, logit, target_sign
from model.preprocessing import prepare

DISPLAY_MAX_SIDE = 768
BORDERLINE_LOG_ODDS = 1.0  # |logit(p) - logit(threshold)| below this: the call is borderline
MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image: small, so a batch's worth can be kept per session."""

    probability: float  # calibrated P(PNEUMONIA)
    ood: OodVerdict  # is this like the training X-rays? If not, the probability is unreliable

    def label(self, threshold: float) -> str:
        return label_for(self.probability, threshold)

    def borderline(self, threshold: float) -> bool:
        """Close enough to the threshold that a slightly different image could flip the call."""
        return abs(float(logit(self.probability)) - float(logit(threshold))) < BORDERLINE_LOG_ODDS

    def cautions(self, threshold: float) -> list[str]:
        """Plain-language reasons to trust this output less, beside the probability."""
        notes = []
        if self.borderline(threshold):
            notes.append(f"Borderline: the probability is close to the threshold {threshold:.4g}; "
                         "a slightly different image of the same chest could be called the other way.")
        if self.ood.near_limit:
            notes.append(NEAR_LIMIT_WORDS)
        return notes

    def trust(self, threshold: float, explanation_cautions: tuple[str, ...] = (),
              threshold_cautions: tuple[str, ...] = ()) -> Trust:
        """One verdict on how far to trust this output: the gate, the borderline caution and (when an
        explanation was checked) the explanation's own caution, in one place for the screen, report and CSV."""
        if not self.ood.in_distribution:
            return Trust("outside", (f"{self.ood.summary[0].upper()}{self.ood.summary[1:]}.",), ("outside",))
        reasons = tuple(self.cautions(threshold)) + tuple(threshold_cautions) + tuple(explanation_cautions)
        notes = (("borderline call",) if self.borderline(threshold) else ()) + \
            (("near the gate's limit",) if self.ood.near_limit else ()) + \
            (("threshold at the edge of its range",) if threshold_cautions else ()) + \
            (("heatmap check failed",) if explanation_cautions else ())
        return Trust("caution" if reasons else "no warning", reasons, notes)


@dataclass(frozen=True)
class Trust:
    """How far to trust one output, and why."""

    level: str  # one of TRUST_HEADLINES
    reasons: tuple[str, ...]  # plain sentences
    notes: tuple[str, ...] = ()  # the same reasons in a few words each, for a table

    @property
    def headline(self) -> str:
        return TRUST_HEADLINES[self.level]

    @property
    def text(self) -> str:
        """Headline and reasons in one line (report, CSV)."""
        return " ".join((self.headline,) + self.reasons)


TRUST_HEADLINES = {
    "outside": "Do not rely on this result: the image is outside what this model knows.",
    "caution": "Read with caution.",
    "no warning": "No warning raised: the image looks like the X-rays this model knows and the call is not borderline.",
}


@dataclass(frozen=True)
class ImageAnalysis:
    display: np.ndarray  # uint8 grayscale in the upload's own aspect ratio, at most DISPLAY_MAX_SIDE a side
    network_view: np.ndarray  # uint8 (S, S): what the network saw, one channel
    prediction: Prediction
    computed: ForwardPass  # the pass that made the prediction (batch of one): explanations are built from it

    @property
    def model_input(self) -> np.ndarray:
        """float32 (S, S, 3) in [0, 1], exactly the array the network ran on."""
        return np.repeat((self.network_view.astype(np.float32) / 255.0)[:, :, None], 3, axis=2)


def analyze_bytes(predictor: Predictor, data: bytes) -> ImageAnalysis:
    """Decode, preprocess and predict; raises ImageInputError with a human message on bad input."""
    prepared = prepare(data, predictor.metadata.preprocessing)
    predictions = predictor.predict(prepared.model_input[None])
    verdict = predictor.ood.check(predictions.features[0], image_stats(prepared.gray, prepared.colorfulness))
    view = np.rint(prepared.model_input[:, :, 0] * 255.0).astype(np.uint8)
    return ImageAnalysis(shrink_to_side(prepared.gray, DISPLAY_MAX_SIDE).copy(), view,
                         Prediction(float(predictions.probabilities[0]), verdict), predictions.image(0))


def reliability_note(verdict: OodVerdict) -> str:
    """Why an output is unreliable, for every place it is shown anyway (screen, report, table, CSV)."""
    return f"UNRELIABLE: the image is outside what this model knows: {verdict.message}."


@dataclass(frozen=True)
class BatchItem:
    """One uploaded file of a batch, identified by its position, never by its name (names repeat)."""

    number: int  # 1-based position in the upload list
    name: str
    prediction: Prediction | None
    error: str | None


RESULT_COLUMNS = ("#", "file", "result", "probability", "label", "threshold", "reliable", "trust", "gate", "message")


def results_rows(items: list[BatchItem], threshold: float, shown_anyway: set[int] = frozenset(),
                 trusts: Mapping[int, Trust] | None = None) -> list[dict]:
    """Table rows for a batch: every file gets one, with a result or the reason there is none.

    The probability of an out-of-distribution image is withheld unless the user
    asked to see it (``shown_anyway``: numbers), and then marked unreliable.
    ``trusts``: each file's trust verdict by number (:func:`trust_of`, the same the page and reports show); a file
    without one gets the verdict without the heatmap check (the gate and the borderline caution only).
    Rows hold only the user's own file name and model outputs: no DICOM header
    field can reach them.
    """
    trusts = trusts or {}
    rows = []
    for item in items:
        row = {"#": item.number, "file": shown_name(item.name), "result": "", "probability": None, "label": "",
               "threshold": threshold, "reliable": "", "trust": "", "gate": "", "message": ""}
        analysis = item.prediction
        if analysis is None:
            row.update(result="not analysed", message=item.error or "could not be read")
            rows.append(row)
            continue
        trust = trusts.get(item.number) or analysis.trust(threshold)
        row.update(trust=trust.level, gate=analysis.ood.reason or "accepted")  # the reason code, as the CLI prints it
        if analysis.ood.in_distribution:
            label = analysis.label(threshold)
            row.update(result=f"{label} {analysis.probability:.3f}", probability=round(analysis.probability, 4),
                       label=label, reliable="yes", message=" ".join(trust.reasons))
        elif item.number in shown_anyway:
            label = analysis.label(threshold)
            row.update(result=f"{label} {analysis.probability:.3f} (unreliable)", probability=round(analysis.probability, 4),
                       label=label, reliable="NO", message=reliability_note(analysis.ood))
        else:
            row.update(result="withheld", reliable="NO",
                       message=f"withheld: the image is outside what this model knows: {analysis.ood.message}.")
        rows.append(row)
    return rows


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    """Text that a spreadsheet would run as a formula is prefixed with a quote (OWASP's CSV-injection advice)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def rows_to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_BIDI_PATTERN = re.compile(f"[{BIDI_CONTROLS}]")


def shown_name(name: str) -> str:
    """A user's file name as it may be shown anywhere (page, table, CSV, reports): each bidirectional control
    character (embeddings, overrides, isolates, marks), which would reorder the text around it ("x\u202egnp.LAMRON
    :tluser" shows as "xresult: NORMAL.png"), is replaced by a visible ``[U+202E]``."""
    return _BIDI_PATTERN.sub(lambda match: f"[U+{ord(match.group()):04X}]", name)


def safe_download_name(name: str, suffix: str) -> str:
    """A file name built from an upload's name: ASCII letters, digits, '.', '-' and '_' only, at most 100 characters."""
    stem = unicodedata.normalize("NFKD", Path(name or "").stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "xray"
    return stem[:MAX_NAME_CHARS - len(suffix)] + suffix


def target_log_odds_fn(predictor: Predictor, target: str):
    """Batch -> calibrated log-odds of ``target``, for the faithfulness check."""
    sign = target_sign(target)
    return lambda images: sign * predictor.predict(images).log_odds


def shown_first(metadata: ModelMetadata) -> str:
    """The heatmap method a visitor sees first, and the one every trust verdict checks: the model's own choice by
    the written rule (:mod:`training.explanations`), or Grad-CAM for a model recorded before the rule."""
    return metadata.explanation.default if metadata.explanation else DEFAULT_METHOD


def explanation_cautions(check: FaithfulnessResult, label: str, method: str) -> tuple[str, ...]:
    """A caution for the trust verdict when the map shown first (``method``, the evidence for the call itself,
    ``label``) fails its check."""
    if check.verdict != "does not support":
        return ()
    return (f"The heatmap check failed: hiding the areas the {CAM_METHODS[method].label} map of the evidence for "
            f"{label.lower()} highlights changes the score no more than hiding random areas.",)


def explain_with_check(predictor: Predictor, explainer: CamExplainer, analysis: ImageAnalysis, method: str,
                       target: str, memo: dict | None = None) -> tuple[EvidenceMap, FaithfulnessResult]:
    """(map at model resolution from the prediction's own pass, on the model's fixed scale when it has one;
    deletion check of that map). ``memo``: see :meth:`model.explain.CamExplainer.raw_cam`."""
    scale = predictor.metadata.cam_scale
    evidence = explainer.evidence(analysis.model_input, method, target, analysis.computed,
                                  scale.value(method, target) if scale else None, memo=memo)
    own = target_sign(target) * float(Predictions(analysis.computed, predictor.metadata.calibration.temperature).log_odds[0])
    return evidence, deletion_check(target_log_odds_fn(predictor, target), analysis.model_input,
                                    evidence.heatmap(per_image=True), original=own)


def trust_of(prediction: Prediction, threshold: float, method: str, check_call,
             threshold_cautions: tuple[str, ...] = ()) -> Trust:
    """The one trust verdict of an output, for every place it is shown (page, table, CSV, reports):
    ``check_call(method, label)`` gives the check of the map shown first for the call's own class, and is only
    asked when the gate accepted the image (an image outside gets "outside" whatever its map says);
    ``threshold_cautions``: what the threshold itself costs this call (one at the edge of its range)."""
    if not prediction.ood.in_distribution:
        return prediction.trust(threshold)
    label = prediction.label(threshold)
    return prediction.trust(threshold, explanation_cautions(check_call(method, label), label, method), threshold_cautions)
