"""Model selection: members, their weight soup and their mean-logit ensemble ranked on the stress validation.

The rule (written in ``training/card_notes.md`` before each round trained):
rank by stress-validation ROC AUC; candidates within ``TIE`` of the best are
tied, and among tied ones a single network (member or soup) is preferred, then
the lower stress log-loss after temperature scaling. An ensemble that wins
outright cannot be served within the budget (one pass is most of it), so the
best single network is taken instead (since v2.2; no earlier round chose an
ensemble). The reference (the previously shipped model) is scored on the same
stress set and is replaced only if the choice beats its stress AUC; when it
stays, it is written out again with its thresholds refitted under the round's
threshold rule. The official test split is never read here.

A soup averages the weights of fine-tunes that share one initialisation
(ImageNet) and one validation split; BatchNorm statistics are frozen ImageNet
ones, so averaging leaves them intact. Its weights are rounded to float16, so the
float16 LiteRT export holds exactly the numbers of the ``.keras`` file at half
the size.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.artifact import history_path, litert_entry, litert_path, load_model, read_verified_metadata, save_metadata, sha256_file
from model.backbones import build_classifier, network_layout
from model.forward_pass import export_litert, keras_forward
from model.predictor import calibrated_probability
from training import stress
from training.outside import counter_examples
from training.train import (
    _split_and_load,
    calibrate_and_threshold,
    fit_on_validation,
    forward_all,
    record_explanation,
    refit_loaded,
    scoring_forward,
)

log = logging.getLogger(__name__)

TIE = 0.002


def soup_weights(models) -> list[np.ndarray]:
    """Uniform average of same-architecture models' weights, rounded to float16 precision."""
    averaged = [np.mean(group, axis=0) for group in zip(*(m.get_weights() for m in models))]
    return [w.astype(np.float16).astype(w.dtype) if w.dtype == np.float32 else w for w in averaged]


def _rank_first(candidates: list[dict]) -> dict:
    best = max(r["stress_roc_auc"] for r in candidates)
    tied = [r for r in candidates if r["stress_roc_auc"] >= best - TIE]
    tied.sort(key=lambda r: (r["networks"] > 1, r["stress_log_loss"]))
    return tied[0]


def choose(rows: list[dict], reference: str | None) -> str:
    """Name of the candidate the written rule selects (see the module docstring)."""
    candidates = [r for r in rows if r["name"] != reference]
    chosen = _rank_first(candidates)
    if chosen["networks"] > 1:  # an ensemble cannot be served within the budget
        chosen = _rank_first([r for r in candidates if r["networks"] == 1])
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is not None and chosen["stress_roc_auc"] <= ref["stress_roc_auc"]:
        return reference
    return chosen["name"]


def _row(name, kind, networks, val_logits, y_val, stress_logits, y_stress) -> dict:
    fitted = calibrate_and_threshold(val_logits, y_val, stress_logits, y_stress)
    s, v = fitted["metrics"]["stress_validation"], fitted["metrics"]["validation"]
    return {"name": name, "kind": kind, "networks": networks, "validation_roc_auc": v["roc_auc"],
            "validation_log_loss": v["log_loss"], "stress_roc_auc": s["roc_auc"], "stress_log_loss": s["log_loss"],
            "stress_log_loss_uncalibrated": s["log_loss_uncalibrated"], "stress_ece": s["ece"],
            "temperature": fitted["calibration"]["temperature"],
            "threshold": fitted["thresholds"][fitted["thresholds"]["default"]]["value"]}


def select(members: list[str], data: str, out: str, reference: str | None = None, version: str = "2",
           outside: str | None = None) -> dict:
    """Score every candidate on the stress validation, apply the rule, write the chosen artifact into ``out``;
    with ``outside`` (counter-examples), the chosen network's population gate is fitted there too."""
    loaded = [load_model(p) for p in members]
    metas = [m for _, m in loaded]
    split = metas[0].dataset["split"]
    digest = metas[0].dataset["validation"]["names_sha256"]
    if any(m.dataset["validation"]["names_sha256"] != digest for m in metas):
        raise ValueError("members must share one validation split (train them with the same --split-seed)")
    _, _, (x_train, _), (x_val, y_val) = _split_and_load(data, 0, split["seed"], split["val_fraction"],
                                                         metas[0].preprocessing)
    x_stress, y_stress = stress.stress_set(x_val, y_val)
    network = network_layout(metas[0].backbone, metas[0].input_size)

    def logits_of(model):
        forward = scoring_forward(model)
        return forward_all(forward, x_val)[0], forward_all(forward, x_stress)[0]

    rows, member_logits = [], []
    for path, (model, _) in zip(members, loaded):
        val_logits, stress_logits = logits_of(model)
        member_logits.append((val_logits, stress_logits))
        rows.append(_row(Path(path).parent.name, "member", 1, val_logits, y_val, stress_logits, y_stress))
    ensemble = tuple(np.mean([m[i] for m in member_logits], axis=0) for i in (0, 1))
    rows.append(_row("ensemble", "mean logit of the members", len(members), *_pair(ensemble, y_val, y_stress)))
    soup = build_classifier(metas[0].backbone, "none", metas[0].input_size, metas[0].training["dropout"])
    soup.set_weights(soup_weights([m for m, _ in loaded]))
    rows.append(_row("soup", "uniform weight average of the members", 1, *_pair(logits_of(soup), y_val, y_stress)))
    reference_name = None
    if reference:
        ref_model, ref_meta = load_model(reference)
        if ref_meta.dataset["validation"]["names_sha256"] != digest:
            raise ValueError("the reference model was validated on another split")
        reference_name = reference_label(ref_meta)
        rows.append(_row(reference_name, "previously shipped", 1, *_pair(logits_of(ref_model), y_val, y_stress)))
    chosen = choose(rows, reference_name)
    for row in rows:
        log.info("candidate %s", json.dumps(row))
    log.info("chosen: %s", chosen)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "tie": TIE, "stress": stress.describe(),
              "candidates": rows, "chosen": chosen, "members": [str(p) for p in members], "reference": reference,
              "reference_name": reference_name,
              "sha256": {str(p): sha256_file(p) for p in [*members, *([reference] if reference else [])]}}
    (out / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    counter = counter_examples(outside, metas[0].preprocessing)
    if chosen == "soup":
        _write_soup(soup, metas, members, network, (x_train, x_val, y_val), out, version, counter)
    else:
        if chosen == reference_name:
            source, chosen_model = Path(reference), ref_model
        else:
            index = [Path(p).parent.name for p in members].index(chosen)
            source, chosen_model = Path(members[index]), loaded[index][0]
        for suffix in (".keras", ".tflite", ".json", ".history.json"):
            shutil.copy(source.with_suffix(suffix), out / source.with_suffix(suffix).name)
        copied = out / source.name
        if chosen == reference_name or counter:  # the round's rules (thresholds, gate) apply to whichever ships
            refit_loaded(copied, chosen_model, read_verified_metadata(copied), (x_train, x_val, y_val), counter)
        save_metadata(copied, read_verified_metadata(copied).replace(model_version=version,
                                                                      selected_as=f"{chosen}, by the stress-validation rule"))
    return report


def _check_same_files(report: dict, reference: str | None) -> None:
    """Refuse to score files other than those the selection scored (by the checksums it recorded)."""
    recorded = report.get("sha256", {})
    named = {path: path for path in report["members"]}
    if reference and report.get("reference"):
        named[report["reference"]] = reference
    for recorded_path, path in named.items():
        if recorded_path in recorded and sha256_file(path) != recorded[recorded_path]:
            raise ValueError(f"{path} is not the file the selection scored as {recorded_path} (checksum differs)")


def reference_label(meta) -> str:
    """How the previously shipped model is named among the candidates: "v1 (reference)", "v2.1 (reference)"."""
    return f"v{meta.model_version} (reference)"


def _pair(logits, y_val, y_stress):
    return logits[0], y_val, logits[1], y_stress


def _write_soup(soup, metas, members, network, arrays, out: Path, version: str, outside=None) -> Path:
    x_train, x_val, y_val = arrays
    first = metas[0]
    model_path = out / f"pneumonia_{first.backbone}.keras"
    soup.save(model_path)
    fitted = fit_on_validation(scoring_forward(soup, network.feature_layer), x_train, x_val, y_val, outside,
                               keras_forward(soup, network), network.feature_layer)
    export_litert(soup, network, litert_path(model_path), float16=True)
    histories = {Path(p).parent.name: json.loads(history_path(p).read_text()) for p in members if history_path(p).exists()}
    history_path(model_path).write_text(json.dumps(histories, indent=1))
    training = dict(first.training, seed=None, train_seconds=round(sum(m.training["train_seconds"] for m in metas), 1),
                    soup_of=[{"seed": m.training["seed"], "sha256": m.sha256,
                              "train_seconds": m.training["train_seconds"]} for m in metas])
    save_metadata(model_path, {
        "model_name": f"pneumonia_{first.backbone}",
        "model_version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": first.backbone,
        "preprocessing": first.preprocessing,
        **asdict(network),
        "runtime": litert_entry(model_path),
        **fitted,
        "training": training,
        "dataset": first.dataset,
    })
    record_explanation(model_path, soup, x_val, y_val)
    log.info("wrote %s", model_path)
    return model_path


def agreement(selection: str, data: str, out: str, split: str = "test", reference: str | None = None) -> dict:
    """After the choice: every candidate scored on ``split`` (reporting only), and whether the stress ranking
    agreed with that split's ranking (Kendall's tau over the candidates; where the chosen one lands).

    ``reference``: where the round's reference lives now, when the path the selection recorded holds another
    model (the shipped path does once the choice ships). The files scored must be the ones the round scored:
    their checksums (recorded since v3) or, for older reports, the reference's version label are checked."""
    from scipy.stats import kendalltau

    from training import data as data_lib
    from training import metrics as metrics_lib

    report = json.loads(Path(selection).read_text())
    reference = reference or report.get("reference")
    _check_same_files(report, reference)
    loaded = [load_model(p) for p in report["members"]]
    meta = loaded[0][1]
    images, labels, _ = data_lib.load_images(data_lib.list_split(data, split), meta.preprocessing)

    def logits_of(model):
        return forward_all(scoring_forward(model), images)[0]

    logits = {Path(p).parent.name: logits_of(m) for p, (m, _) in zip(report["members"], loaded)}
    logits["ensemble"] = np.mean(list(logits.values()), axis=0)
    soup = build_classifier(meta.backbone, "none", meta.input_size, meta.training["dropout"])
    soup.set_weights(soup_weights([m for m, _ in loaded]))
    logits["soup"] = logits_of(soup)
    if reference:
        ref_model, ref_meta = load_model(reference)
        if report.get("reference_name") and reference_label(ref_meta) != report["reference_name"]:
            raise ValueError(f"{reference} is {reference_label(ref_meta)}, not the round's {report['reference_name']}: "
                             "pass --reference with where that model lives now")
        logits[report.get("reference_name") or reference_label(ref_meta)] = logits_of(ref_model)
    rows = []
    for row in report["candidates"]:
        z = logits[row["name"]]
        probability = calibrated_probability(z, row["temperature"])
        rows.append({"name": row["name"], "stress_roc_auc": row["stress_roc_auc"],
                     f"{split}_roc_auc": metrics_lib.ranking_metrics(labels, probability)["roc_auc"],
                     f"{split}_log_loss": metrics_lib.log_loss(labels, probability),
                     f"{split}_ece": metrics_lib.expected_calibration_error(labels, probability)})
    tau = kendalltau([r["stress_roc_auc"] for r in rows], [r[f"{split}_roc_auc"] for r in rows])
    by_split = sorted(rows, key=lambda r: -r[f"{split}_roc_auc"])
    result = {"split": split, "images": int(len(labels)), "chosen": report["chosen"], "candidates": rows,
              "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
              "chosen_rank_on_split": [r["name"] for r in by_split].index(report["chosen"]) + 1,
              "best_on_split": by_split[0]["name"]}
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    keys = ("kendall_tau", "chosen_rank_on_split", "best_on_split")
    log.info("stress vs %s ranking: %s", split, json.dumps({k: result[k] for k in keys}))
    return result
