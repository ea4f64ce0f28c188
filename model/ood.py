"""Population gate: is this input a frontal chest X-ray of a young child, like the ones the model was trained on?

Three layers, cheapest first:

1. Image checks on the decoded pixels: colour photographs (radiographs are
   grey) and blank or near-uniform images.
2. A population head (since model v3): a multinomial logistic regression on the
   network's pooled features that tells pediatric chest X-rays (the training
   split) from real counter-examples: adult chest X-rays, X-rays of other body
   parts, and inverted (negative) copies of the training X-rays (outlier
   exposure). It names the kind of mismatch.
3. A probabilistic-PCA Mahalanobis distance on the same features, fitted on the
   training split: anything unlike every X-ray it knows, including what the head
   never saw (non-X-rays, unseen views).

Both thresholds come from the clean validation split (never stress renders, never
test): each at its ``CLEAN_QUANTILE`` of the validation X-rays, so together they
caution at most about 1 % of real pediatric X-rays like the training ones.

The fitted parameters live in the model's metadata (``ood`` section), encoded as
base64 float32 so the one JSON stays compact, and sealed with a SHA-256 of the
section (:func:`seal`): a hand-edited gate is refused at load.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_COLORFULNESS = 0.06  # mean (max - min) channel spread, 0..1; grey X-rays saved as RGB are ~0
MIN_GRAY_STD = 6.0  # uint8 grey levels: below this the image is blank or near-uniform
PCA_COMPONENTS = 32
CLEAN_QUANTILE = 0.9975  # each detector's threshold on clean validation X-rays: together about 0.5 % cautioned
KIND_QUANTILE = 0.99  # a kind is named only within this quantile of its own fitted examples' feature distance
CHEST_NAME_QUANTILE = 0.25  # the same for the chest kinds: stricter, so an unseen body part is not named a chest
POPULATION_C = 0.1  # inverse L2 strength of the population head (chosen on leave-one-source-out validation)

NEAR_LIMIT = 0.8  # feature distance ratio above which an accepted image is called close to the gate's limit
HEADLINE = "Outside what this model knows"
# What "passed the gate but near its limit" means for the visitor, in one plain sentence.
NEAR_LIMIT_WORDS = ("This X-ray passed the check that it looks like the young children's chest X-rays the model "
                    "was trained on, but only just: it is less like them than most are, so trust the answer less.")
INSIDE = "pediatric_chest"
POPULATION_CLASSES = (INSIDE, "child_chest", "adult_chest", "other_body_part", "inverted")
CHEST_KINDS = ("child_chest", "adult_chest")  # a chest X-ray, but not of the model's population
ADULT_ODDS = 64.0  # "adult" only when P(adult) >= ADULT_ODDS x P(any child's chest X-ray); see name_kind
DEFAULT_FEATURE_SOURCE = {"layer": "top_activation", "pooling": "mean"}  # gates fitted before the source was named

# Reason code -> what it means, in plain words (the headline of a flagged result). Codes are stable: the CLI prints them.
REASON_WORDS = {
    "colour": "not an X-ray: it is in colour (a photograph or a screenshot?)",
    "blank": "blank or nearly uniform: there is no X-ray to read",
    "inverted": "looks like an inverted (negative) X-ray: bones dark, lungs bright",
    "other_body_part": "looks like an X-ray of another body part, not a chest",
    "adult_chest": "looks like an adult chest X-ray; this model only knows children aged 1–5",
    "unfamiliar_chest": "unlike the X-rays this model was trained on (another hospital, age or machine)",
    "features": "unlike any X-ray this model knows (another view, body part, age group or machine, or not an X-ray)",
}
REASON_SHORT = {"colour": "in colour, not an X-ray", "blank": "blank", "inverted": "inverted X-ray",
                "other_body_part": "another body part", "adult_chest": "adult chest X-ray",
                "unfamiliar_chest": "unlike its training X-rays",
                "features": "unlike known X-rays"}  # a few words each, for narrow tables


@dataclass(frozen=True)
class ImageStats:
    colorfulness: float  # 0 for grey images
    gray_std: float


@dataclass(frozen=True)
class OodVerdict:
    in_distribution: bool
    reasons: tuple[str, ...]  # codes of REASON_WORDS, most specific first: the checks that fired
    distance: float  # feature distance / threshold: > 1 is out of distribution
    stats: ImageStats
    outside: float = 0.0  # population head's P(not a young child's chest X-ray) / threshold: > 1 is flagged
    likely: str = INSIDE  # the population head's most likely class
    outside_limit: float = 1.0  # the head's threshold on that probability

    @property
    def outside_probability(self) -> float:
        return self.outside * self.outside_limit

    @property
    def reason(self) -> str | None:
        """The one reason to show first, or None when accepted."""
        return self.reasons[0] if self.reasons else None

    @property
    def summary(self) -> str:
        """What the image is, in plain words, for a headline ("" when accepted)."""
        return REASON_WORDS[self.reason] if self.reason else ""

    @property
    def near_limit(self) -> bool:
        """Accepted, but closer to the gate's limit than most training X-rays: a caution, not a refusal."""
        return self.in_distribution and max(self.distance, self.outside) > NEAR_LIMIT

    @property
    def message(self) -> str:
        """Which checks fired and by how far, in words; empty when none did."""
        details = {
            "colour": f"{REASON_WORDS['colour']} (colour spread {self.stats.colorfulness:.2f}; grey radiographs are near 0)",
            "blank": f"{REASON_WORDS['blank']} (grey-level spread {self.stats.gray_std:.1f})",
            "features": (f"{REASON_WORDS['features']}: its features lie {self.distance:.1f}× as far from the training "
                         "X-rays as the gate allows"),
        }
        return "; ".join(details.get(r, REASON_WORDS[r]) for r in self.reasons)

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "reason": self.reason, "reasons": list(self.reasons),
                "distance_ratio": round(self.distance, 4), "population_ratio": round(self.outside, 4),
                "near_limit": self.near_limit, "message": self.message}


def image_stats(gray: np.ndarray, colorfulness: float) -> ImageStats:
    return ImageStats(float(colorfulness), float(np.std(gray)))


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float64)


def fit_ood(train_features: np.ndarray, val_features: np.ndarray, components: int = PCA_COMPONENTS,
            quantile: float = CLEAN_QUANTILE, outside: Mapping[str, np.ndarray] | None = None,
            feature_source: Mapping | None = None, adult_odds: float = ADULT_ODDS) -> dict:
    """Fit the PPCA distance on training features and, given counter-examples (``outside``: class name of
    POPULATION_CLASSES -> features), the population head; thresholds at a quantile of clean validation X-rays.
    ``feature_source`` names the layer and pooling the features came from (recorded; the forward pass serves it).
    The section comes back sealed."""
    train_features = np.asarray(train_features, np.float64)
    dim = train_features.shape[1]
    k = int(min(components, dim - 1, len(train_features) - 1))
    mean = train_features.mean(axis=0)
    _, singular, vt = np.linalg.svd(train_features - mean, full_matrices=False)
    variances = singular[:k] ** 2 / (len(train_features) - 1)
    residual_variance = max(float((singular[k:] ** 2).sum() / (len(train_features) - 1) / max(dim - k, 1)), 1e-8)
    section = {"method": f"probabilistic PCA Mahalanobis distance on pooled features, {k} components",
               "dim": dim, "components": k, "mean": _encode(mean), "basis": _encode(vt[:k]),
               "variances": _encode(variances), "residual_variance": residual_variance, "threshold": 1.0,
               "max_colorfulness": MAX_COLORFULNESS, "min_gray_std": MIN_GRAY_STD,
               "feature_source": dict(feature_source or DEFAULT_FEATURE_SOURCE)}
    distance = OodDetector(section).distances  # does not depend on the threshold set next
    section["threshold"] = float(np.quantile(distance(val_features), quantile))
    section["threshold_rule"] = ("largest validation-split distance" if quantile >= 1.0
                                 else f"{quantile:g} quantile of clean validation-split distances")
    if outside:
        population = fit_population(train_features, outside, val_features, quantile)
        population["kind_distance_limits"] = kind_distance_limits(  # beyond these, the kind is a guess
            distance, {name: outside[name] for name in population["classes"][1:]}, section["threshold"])
        population["adult_odds"] = float(adult_odds)
        population["naming_rule"] = (f"a kind is named within the {KIND_QUANTILE} quantile of its own examples' "
                                     f"feature distance; adult only when P(adult) >= {adult_odds:g} x P(any child)")
        section["population"] = population
    return seal(section)


def kind_distance_limits(distance, outside: Mapping[str, np.ndarray], threshold: float,
                         chest_quantile: float = CHEST_NAME_QUANTILE) -> dict:
    """Kind -> the distance ratio within which the head's kind is named: a quantile of that kind's own fitted
    examples' feature distance (``chest_quantile`` for the chest kinds). Beyond it: "unlike any X-ray"."""
    return {name: float(np.quantile(distance(x), chest_quantile if name in CHEST_KINDS else KIND_QUANTILE) / threshold)
            for name, x in outside.items()}


def fit_population(inside: np.ndarray, outside: Mapping[str, np.ndarray], val_features: np.ndarray,
                   quantile: float = CLEAN_QUANTILE, c: float = POPULATION_C) -> dict:
    """Multinomial logistic regression: pediatric chest X-rays (``inside``) against each outside class, classes
    weighted equally; flagged when P(not pediatric) exceeds its ``quantile`` over clean validation X-rays.
    Deterministic (lbfgs on standardised features)."""
    from sklearn.linear_model import LogisticRegression

    classes = [INSIDE] + [name for name in POPULATION_CLASSES[1:] if name in outside and len(outside[name])]
    unknown = set(outside) - set(POPULATION_CLASSES)
    if unknown:
        raise ValueError(f"unknown population classes {sorted(unknown)}; known: {list(POPULATION_CLASSES)}")
    x = np.concatenate([inside] + [outside[name] for name in classes[1:]]).astype(np.float64)
    y = np.concatenate([np.full(len(inside), 0)] + [np.full(len(outside[name]), i + 1) for i, name in enumerate(classes[1:])])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    head = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit((x - mean) / scale, y)
    coef, intercept = head.coef_, head.intercept_
    if len(classes) == 2:  # sklearn's binary form (one row) as two softmax rows: the same probabilities
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    section = {"method": f"multinomial logistic regression on pooled features (C={c}), outlier exposure",
               "classes": classes, "counts": {name: int(np.sum(y == i)) for i, name in enumerate(classes)},
               "dim": int(x.shape[1]), "mean": _encode(mean), "scale": _encode(scale),
               "coef": _encode(coef), "intercept": _encode(intercept), "threshold": 1.0}
    scores = PopulationHead(section).outside_probability(val_features)
    section["threshold"] = float(np.quantile(scores, quantile))
    section["threshold_rule"] = f"{quantile:g} quantile of P(not pediatric) over clean validation-split X-rays"
    return section


def _section_digest(section: Mapping) -> str:
    body = {k: v for k, v in section.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(section: Mapping) -> dict:
    """The gate section with the SHA-256 of its own content, so a hand edit is detected at load."""
    return dict(section, sha256=_section_digest(section))


def seal_problem(section: Mapping) -> str | None:
    """Why a gate section is not to be trusted, or None. Gates written before the seal carry none and no head."""
    if "sha256" not in section:
        return "ood gate with a population head must carry its sha256" if "population" in section else None
    if section["sha256"] != _section_digest(section):
        return "ood gate checksum mismatch: the gate's parameters were modified after fitting"
    return None


class PopulationHead:
    """P(class) for each population class from pooled features (NumPy only: serving stays TensorFlow-free)."""

    def __init__(self, section: Mapping):
        self.classes = tuple(section["classes"])
        k, dim = len(self.classes), int(section["dim"])
        self.mean = _decode(section["mean"], (dim,))
        self.scale = _decode(section["scale"], (dim,))
        self.coef = _decode(section["coef"], (k, dim))
        self.intercept = _decode(section["intercept"], (k,))
        self.threshold = float(section["threshold"])
        self.kind_limits = {k: float(v) for k, v in section.get("kind_distance_limits", {}).items()}
        self.adult_odds = float(section.get("adult_odds", 0.0))  # gates fitted before the rule: the likeliest kind

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def outside_probability(self, features: np.ndarray) -> np.ndarray:
        return 1.0 - self.probabilities(features)[:, 0]

    def name_kind(self, probabilities: np.ndarray, likely: str, ratio: float) -> str:
        """The reason code for an image this head flags, given its class probabilities, likeliest outside kind and
        feature-distance ratio. A kind is named only when the image is as near as that kind's own fitted examples
        (else "unlike any X-ray"); "adult" only when the adult class outweighs every child class (the model's own
        population and other children's chest X-rays) by ``adult_odds``; any other chest-like image gets the words
        that are true whoever is in it: unlike the X-rays the model was trained on."""
        if ratio > self.kind_limits.get(likely, np.inf):
            return "features"
        if likely not in CHEST_KINDS:
            return likely
        p = dict(zip(self.classes, probabilities))
        if self.adult_odds > 0 and "child_chest" not in p:  # never shown another hospital's children: it cannot
            return "unfamiliar_chest"  # tell their X-rays from adults', so it names no one adult
        children = p[INSIDE] + p.get("child_chest", 0.0)
        return "adult_chest" if p.get("adult_chest", 0.0) >= self.adult_odds * children else "unfamiliar_chest"


class OodDetector:
    def __init__(self, section: dict):
        self.section = section
        dim, k = int(section["dim"]), int(section["components"])
        self.mean = _decode(section["mean"], (dim,))
        self.basis = _decode(section["basis"], (k, dim))
        self.variances = _decode(section["variances"], (k,))
        self.residual_variance = float(section["residual_variance"])
        self.threshold = float(section["threshold"])
        self.max_colorfulness = float(section.get("max_colorfulness", MAX_COLORFULNESS))
        self.min_gray_std = float(section.get("min_gray_std", MIN_GRAY_STD))
        self.population = PopulationHead(section["population"]) if "population" in section else None

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared PPCA Mahalanobis distance, divided by the feature dimension."""
        centred = np.asarray(features, np.float64) - self.mean
        projected = centred @ self.basis.T
        residual = (centred ** 2).sum(axis=1) - (projected ** 2).sum(axis=1)
        return ((projected ** 2 / self.variances).sum(axis=1) + np.maximum(residual, 0) / self.residual_variance) / len(self.mean)

    @property
    def feature_source(self) -> dict:
        """Which layer's pooled output the gate was fitted on (the forward pass's ``features``)."""
        return dict(self.section.get("feature_source", DEFAULT_FEATURE_SOURCE))

    def decide(self, features: np.ndarray) -> tuple[list[str | None], np.ndarray, np.ndarray, list[str]]:
        """The learned detectors over a batch (N, D): (reason code or None, distance ratio, population ratio,
        likeliest kind) per image. The image checks (colour, blank) come first in :meth:`check`."""
        features = np.atleast_2d(np.asarray(features))
        ratios = self.distances(features) / self.threshold
        n = len(features)
        if self.population is None:
            return [("features" if r > 1.0 else None) for r in ratios], ratios, np.zeros(n), [INSIDE] * n
        probabilities = self.population.probabilities(features)
        outside = (1.0 - probabilities[:, 0]) / self.population.threshold
        kinds = [self.population.classes[int(i) + 1] for i in np.argmax(probabilities[:, 1:], axis=1)]
        reasons = [self.population.name_kind(p, kind, r) if o > 1.0 else ("features" if r > 1.0 else None)
                   for p, kind, r, o in zip(probabilities, kinds, ratios, outside)]
        return reasons, ratios, outside, kinds

    def check(self, features: np.ndarray, stats: ImageStats) -> OodVerdict:
        """Verdict for ONE image: its pooled features (D,) and decoded-pixel statistics."""
        learned, ratios, outside, kinds = self.decide(np.asarray(features)[None])
        reasons = []
        if stats.colorfulness > self.max_colorfulness:
            reasons.append("colour")
        if stats.gray_std < self.min_gray_std:
            reasons.append("blank")
        if learned[0] and not reasons:  # a colour or blank image is no X-ray: naming a kind of X-ray would mislead
            reasons.append(learned[0])
        limit = self.population.threshold if self.population is not None else 1.0
        return OodVerdict(not reasons, tuple(reasons), float(ratios[0]), stats, float(outside[0]), kinds[0], limit)
