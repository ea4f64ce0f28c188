"""What a decision threshold means, read from the model's validation operating points.

Sensitivity and specificity come from the metadata's validation table; PPV and
NPV depend on how common pneumonia is where the model is used, so they are
computed for a prevalence the user chooses (Bayes' rule).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    prevalence: float
    ppv: float | None  # None when no image would be called positive/negative
    npv: float | None


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float | None, float | None]:
    """(PPV, NPV) at ``prevalence`` for a test with the given sensitivity and specificity."""
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    true_pos, false_pos = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_neg, false_neg = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None
    return ppv, npv


def operating_point(metadata: dict, threshold: float, prevalence: float) -> OperatingPoint:
    """Validation sensitivity/specificity at the tabulated threshold nearest ``threshold``."""
    points = metadata["operating_points"]
    nearest = min(points, key=lambda p: abs(p["threshold"] - threshold))
    ppv, npv = predictive_values(nearest["sensitivity"], nearest["specificity"], prevalence)
    return OperatingPoint(float(threshold), nearest["sensitivity"], nearest["specificity"], prevalence, ppv, npv)


def threshold_presets(metadata: dict) -> dict[str, float]:
    """Named thresholds stored in the artifact, e.g. {"balanced": 0.41, "screening": 0.12}."""
    return {name: float(entry["value"]) for name, entry in metadata["thresholds"].items() if name != "default"}
