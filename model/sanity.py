"""Does a heatmap depend on the network that made the call? Cascade randomisation (Adebayo et al., NeurIPS 2018).

Re-initialise the top of the network, then one more block at a time, recompute
each map and measure how much of its ranking survives (Spearman's rank
correlation with the original map, absolute value, on the deletion check's grid
of cells). A map that explains the model must change when the model's top is
random; a map that barely moves shows image structure, not reasoning. Weights
are redrawn with the mean and spread of the originals (seeded), so the network
stays well scaled and keeps producing maps. Needs TensorFlow: training and
benchmarks only.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.stats import spearmanr

from model.artifact import NetworkLayout
from model.explain import CamExplainer
from model.faithfulness import CELL
from model.forward_pass import keras_forward

log = logging.getLogger(__name__)

CASCADE = ("head", "head + top block", "head + top block + block below")  # the keys of ExplanationChoice's sanity


def cascade_groups(model, network: NetworkLayout) -> list[list[str]]:
    """[head], [top block], [block below]: layer names with weights, from the output down; a block is the layers
    sharing a name prefix (``top_``, ``block15_``), the head the logit layer."""
    groups: list[list[str]] = [[network.logit_layer]]
    prefix = None
    for layer in reversed(model.layers):
        if layer.name == network.logit_layer or not layer.weights:
            continue
        name = layer.name.split("_")[0]
        if name != prefix:
            if len(groups) == len(CASCADE):
                break
            groups.append([])
            prefix = name
        groups[-1].append(layer.name)
    return groups


def randomised_copies(model, network: NetworkLayout, seed: int = 0, steps: int = len(CASCADE)):
    """One copy of ``model`` per step of :data:`CASCADE` (the first ``steps``), each with one more group
    re-initialised; ``model`` is not changed."""
    import keras

    rng = np.random.default_rng(seed)
    copies, redrawn = [], []
    for group in cascade_groups(model, network)[:steps]:
        redrawn += group
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        for name in redrawn:
            layer = copy.get_layer(name)
            layer.set_weights([_redraw(w, rng, "variance" in v.path) for w, v in zip(layer.get_weights(), layer.weights)])
        copies.append(copy)
    return copies


def _redraw(weights: np.ndarray, rng: np.random.Generator, positive: bool) -> np.ndarray:
    drawn = rng.normal(float(weights.mean()), float(weights.std()) or 1e-3, weights.shape)
    return (np.abs(drawn) if positive else drawn).astype(weights.dtype)


def rank_correlation(original: np.ndarray, changed: np.ndarray, grid: int = 224 // CELL) -> float:
    """|Spearman| between two maps of one method, compared on the check's grid of cells (maps finer than it are
    averaged down to it); a map that became constant has changed (0)."""
    a, b = (_cells(m, grid) for m in (original, changed))
    if a.std() == 0 or b.std() == 0:
        return 0.0
    value = float(spearmanr(a, b).statistic)
    return 0.0 if np.isnan(value) else abs(value)  # nan: ranks all tied (a map constant up to rounding)


def _cells(heatmap: np.ndarray, grid: int) -> np.ndarray:
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape[0] > grid:
        heatmap = cv2.resize(heatmap, (grid, grid), interpolation=cv2.INTER_AREA)
    return heatmap.ravel()


def sanity(model, network, images: np.ndarray, targets: list[str], methods, steps: int = 2, seed: int = 0) -> dict:
    """Method -> cascade step -> mean |Spearman| between each image's map and the same map after re-initialising."""
    def maps(explainer):
        """method -> one raw map per image (the methods of one image share occlusion's patch passes)."""
        memos = [{} for _ in images]
        return {m: [explainer.raw_cam(image, m, t, memo=memo) for image, t, memo in zip(images, targets, memos)]
                for m in methods}

    reference = maps(CamExplainer(keras_forward(model, network)))
    result = {m: {} for m in methods}
    for step, copy in zip(CASCADE, randomised_copies(model, network, seed, steps)):
        randomised = maps(CamExplainer(keras_forward(copy, network)))
        for m in methods:
            result[m][step] = float(np.mean([rank_correlation(a, b) for a, b in zip(reference[m], randomised[m])]))
        log.info("sanity after re-initialising the %s: %s", step, {m: round(v[step], 3) for m, v in result.items()})
    return result
