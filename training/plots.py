"""Evaluation figures as PNGs: ROC, PR, confusion matrix, reliability, history, Grad-CAM grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg  # the object API: no global backend switch
from matplotlib.figure import Figure
from sklearn import metrics as skm

from model.artifact import CLASS_NAMES
from model.preprocessing import prepare


def _subplots(*grid, figsize):
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(*grid)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def roc_curve(path, labels, probabilities, report):
    fpr, tpr, _ = skm.roc_curve(labels, probabilities)
    fig, ax = _subplots(figsize=(4.5, 4.5))
    ci = report["bootstrap"]["roc_auc_95ci"]
    ax.plot(fpr, tpr, label=f"AUC {report['ranking']['roc_auc']:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f})")
    for name, m in report["thresholds"].items():
        ax.plot(1 - m["specificity"], m["sensitivity"], "o", label=f"{name} threshold {m['threshold']:.2f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def pr_curve(path, labels, probabilities, report):
    precision, recall, _ = skm.precision_recall_curve(labels, probabilities)
    fig, ax = _subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"AP {report['ranking']['pr_auc']:.3f}")
    ax.axhline(np.mean(labels), ls="--", color="grey", lw=0.8, label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision–recall")
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)


def confusion(path, report):
    m = report["thresholds"][report["default_threshold"]]
    cm = m["confusion_matrix"]
    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = _subplots(figsize=(4, 3.6))
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > grid.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title(f"{report['default_threshold']} threshold {m['threshold']:.2f}")
    _save(fig, path)


def reliability(path, labels, probabilities, report, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    centres, observed, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centres.append(probabilities[mask].mean())
            observed.append(np.mean(labels[mask]))
            counts.append(mask.sum())
    fig, ax = _subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.plot(centres, observed, "o-", label=f"ECE {report['ranking']['ece']:.3f}")
    for x, y, n in zip(centres, observed, counts, strict=False):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax.set(xlabel="predicted P(pneumonia)", ylabel="observed fraction pneumonia", title="Reliability")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def _stages(hist: dict) -> dict:
    """{label: per-epoch history}: a model's stages, or each member's stages for a soup ({member: {stage: ...}})."""
    if all("loss" in h for h in hist.values()):
        return hist
    return {f"{member} {stage}": h for member, stages in hist.items() for stage, h in stages.items()}


def history(path, history_file):
    hist = _stages(json.loads(Path(history_file).read_text()))
    soup = any(" " in label for label in hist)
    fig, axes = _subplots(1, 2, figsize=(8, 3.8))
    offset = 0
    for stage, h in hist.items():
        offset = 0 if soup else offset  # a soup's members each start at epoch 1
        epochs = np.arange(offset + 1, offset + 1 + len(h["loss"]))
        axes[0].plot(epochs, h["loss"], "o-", label=f"{stage}: training images")
        axes[0].plot(epochs, h["val_loss"], "s--", label=f"{stage}: validation images")
        axes[1].plot(epochs, h["auc"], "o-", label=f"{stage}: training images")
        axes[1].plot(epochs, h["val_auc"], "s--", label=f"{stage}: validation images")
        offset += len(h["loss"])
    axes[0].set(xlabel="epoch (one pass over the training images)", ylabel="loss", title="Loss (lower is better)")
    axes[1].set(xlabel="epoch (one pass over the training images)", ylabel="ROC AUC",
                title="ROC AUC (higher is better)")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.suptitle("Training history", fontsize=12)
    _save(fig, path)


def heatmap_grid(path, predictor, examples, probabilities, labels, per_class=4, seed=0):
    """Sample predictions with the map shown first in the app (its method, the evidence for each call's own class,
    on the fixed scale) and its check's verdict: ``per_class`` random images of each true class, one row each."""
    from model.explain import CAM_METHODS, CamExplainer, overlay_heatmap
    from model.faithfulness import deletion_check
    from model.service import shown_first, target_log_odds_fn

    explainer = CamExplainer.for_predictor(predictor)
    method = shown_first(predictor.metadata)
    rng = np.random.default_rng(seed)
    picks = [i for c in (0, 1) for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False)]
    fig, axes = _subplots(2, per_class, figsize=(2.4 * per_class, 6.8))
    threshold = predictor.metadata.thresholds.default_value
    scale = predictor.metadata.cam_scale
    for ax, i in zip(axes.ravel(), picks, strict=False):
        image = prepare(examples[i].path.read_bytes(), predictor.metadata.preprocessing).model_input
        predicted = CLASS_NAMES[int(probabilities[i] >= threshold)]
        evidence = explainer.evidence(image, method, predicted, reference=scale.value(method, predicted) if scale else None)
        verdict = deletion_check(target_log_odds_fn(predictor, predicted), image, evidence.heatmap(per_image=True)).verdict
        ax.imshow(overlay_heatmap(image[:, :, 0], evidence.heatmap(), opacity=0.35))
        wrong = predicted != CLASS_NAMES[labels[i]]
        ax.set_title(f"P = {probabilities[i]:.2f}, called {predicted}" + (" (wrong)" if wrong else "")
                     + f"\nmap check: {verdict}", fontsize=8, color="red" if wrong else "black")
        ax.axis("off")
    for row, name in enumerate(CLASS_NAMES):
        axes[row, 0].text(-0.08, 0.5, f"truly {name}", transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=10, weight="bold")
    fig.suptitle(f"{CAM_METHODS[method].label}: evidence for each call" + (" (fixed scale)" if scale else ""), fontsize=12)
    _save(fig, path)


def write_all(folder, labels, probabilities, predictor, examples, report, history_file):
    folder = Path(folder)
    split = report["split"]
    roc_curve(folder / f"{split}_roc.png", labels, probabilities, report)
    pr_curve(folder / f"{split}_pr.png", labels, probabilities, report)
    confusion(folder / f"{split}_confusion.png", report)
    reliability(folder / f"{split}_reliability.png", labels, probabilities, report)
    if Path(history_file).exists():
        history(folder / "training_history.png", history_file)
    heatmap_grid(folder / f"{split}_heatmap_samples.png", predictor, examples, probabilities, labels)
