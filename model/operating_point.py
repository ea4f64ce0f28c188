"""What a decision threshold means on patients the model never saw.

Sensitivity and specificity come from the official test split's per-class
probabilities, which ``python -m training evaluate --record`` writes into the
metadata (reporting, not choosing: nothing is fitted on them), so they are exact
at any threshold. A model without that record falls back to the validation
table, labelled as optimistic. PPV and NPV depend on how common pneumonia is
where the model is used, so they are computed for a prevalence the user chooses
(Bayes' rule).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from model.artifact import ModelMetadata

# Children X-rayed because pneumonia is suspected: an illustrative figure, far below the study splits'
# 74 % (train) and 62 % (test), which were assembled for the study rather than sampled from a clinic.
DEFAULT_PREVALENCE = 0.20
PREVALENCE_REASON = (f"{DEFAULT_PREVALENCE:.0%} by default: an illustrative share of children X-rayed because pneumonia is "
                     "suspected. The dataset's own mix (74 % pneumonia in training, 62 % in test) was assembled for the "
                     "study, not sampled from a clinic, and would make PPV look far better than it is. Set your own.")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    prevalence: float
    ppv: float | None  # None when no image would be called positive/negative
    npv: float | None
    source: str  # where sensitivity and specificity were measured, for labels
    held_out: bool  # True: official test split; False: validation (optimistic)


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float | None, float | None]:
    """(PPV, NPV) at ``prevalence`` for a test with the given sensitivity and specificity."""
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    true_pos, false_pos = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_neg, false_neg = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None
    return ppv, npv


def _held_out(metadata: ModelMetadata, threshold: float) -> tuple[float, float, str] | None:
    scores = (metadata.metrics.test or {}).get("scores")
    if not scores:
        return None
    normal, pneumonia = scores["NORMAL"], scores["PNEUMONIA"]  # each sorted ascending
    sensitivity = 1 - bisect_left(pneumonia, threshold) / len(pneumonia)  # share with p >= threshold
    specificity = bisect_left(normal, threshold) / len(normal)  # share with p < threshold
    source = f"official test split, {len(normal) + len(pneumonia)} images ({len(normal)} normal, {len(pneumonia)} pneumonia)"
    return sensitivity, specificity, source


def operating_point(metadata: ModelMetadata, threshold: float, prevalence: float) -> OperatingPoint:
    """Sensitivity/specificity at ``threshold``: held-out test figures when recorded, else the validation table."""
    held_out = _held_out(metadata, threshold)
    if held_out:
        sensitivity, specificity, source = held_out
    else:
        nearest = min(metadata.operating_points, key=lambda p: abs(p.threshold - threshold))
        sensitivity, specificity = nearest.sensitivity, nearest.specificity
        source = "validation split (optimistic: drawn from the training data's hospital and period)"
    ppv, npv = predictive_values(sensitivity, specificity, prevalence)
    return OperatingPoint(float(threshold), sensitivity, specificity, prevalence, ppv, npv, source, bool(held_out))


EDGE_SHARE = 0.5  # a threshold that calls more than half of one class the wrong way is at the edge of the range


@dataclass(frozen=True)
class EdgeOfRange:
    """A threshold at the edge of the range: where it was measured, it calls most X-rays of one class the wrong way."""

    threshold: float
    called: str  # the call it makes of almost everything: "PNEUMONIA" (a low threshold) or "NORMAL" (a high one)
    does: str  # what it does where it was measured, with the figure: "on the official test split it calls ..."

    @property
    def meaning(self) -> str:
        return f"Threshold {self.threshold:.3f} is at the edge of the range: {self.does}."

    def caution(self, label: str) -> str | None:
        """For a call in the threshold's own direction: however far from the threshold, it says little."""
        if label != self.called:
            return None
        return (f"The threshold is at the edge of its range: {self.does}. A {label} call there says little about "
                "this image, however far its probability is from the threshold.")


def edge_of_range(point: OperatingPoint) -> EdgeOfRange | None:
    """What a threshold at the edge of the range means, from the figures measured at it (``point``), or None.

    At the edge (specificity or sensitivity below :data:`EDGE_SHARE` where ``point`` was measured) a call in the
    threshold's direction says little about the image, so "not borderline" would claim too much.
    """
    where = "the official test split" if point.held_out else "the validation split"
    if point.specificity < EDGE_SHARE:
        called, other, figure = "PNEUMONIA", "normal", f"specificity {point.specificity:.1%}"
        wrong = 1 - point.specificity  # share of normal X-rays called PNEUMONIA
    elif point.sensitivity < EDGE_SHARE:
        called, other, figure = "NORMAL", "pneumonia", f"sensitivity {point.sensitivity:.1%}"
        wrong = 1 - point.sensitivity  # share of pneumonia X-rays called NORMAL
    else:
        return None
    how_many = f"almost every X-ray {called}, {other} ones too" if wrong > 0.9 else f"{wrong:.0%} of {other} X-rays {called}"
    return EdgeOfRange(point.threshold, called, f"on {where} it calls {how_many} ({figure})")
