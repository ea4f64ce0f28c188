"""``python -m training COMMAND``: train, search, select, evaluate, agreement, ood-report, population-report,
split-probe, card, refit, export; see ``--help`` of each. The commands are one table (:data:`COMMANDS`), in the order of a training run."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys


def _add_config_arguments(p):
    from training.train import TrainConfig

    p.add_argument("--data", required=True, help="dataset folder with train/{NORMAL,PNEUMONIA}")
    p.add_argument("--out", required=True, help="output folder for the .keras model and its metadata")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "preprocessing"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool" or isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=f"default: {f.default}")


def _train_parser(sub):
    p = sub.add_parser("train", help="fine-tune a backbone and write the model artifact")
    _add_config_arguments(p)


def _search_parser(sub):
    p = sub.add_parser("search", help="small hyper-parameter grid (unfreeze depth, LR, dropout) scored on validation")
    _add_config_arguments(p)
    p.add_argument("--max-trials", type=int, default=0, help="stop after this many trials (0: the whole grid)")


def _refit_parser(sub):
    p = sub.add_parser("refit", help="redo calibration, thresholds, operating points and OOD gate of an existing "
                                     "model on its own validation split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the model was trained on")
    p.add_argument("--outside", help="folder of counter-examples for the population gate (see training/outside.py)")
    p.add_argument("--version", help="model_version to stamp (the network is unchanged; its settings are not)")


def _explanations_parser(sub):
    p = sub.add_parser("explanations", help="refit the heatmaps' fixed scale and choose the map shown first by the "
                                            "written rule, on the model's own validation split (nothing else changes)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the model was trained on")


def _export_parser(sub):
    p = sub.add_parser("export", help="write the LiteRT export the app runs, for a model trained before exports existed")
    p.add_argument("--model", required=True)


def _split_probe_parser(sub):
    p = sub.add_parser("split-probe", help="is a temporal (shift-like) validation split harder than a random patient "
                                           "split? frozen-feature probe on train/ only")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="path of the JSON report")


def _select_parser(sub):
    p = sub.add_parser("select", help="rank members, their weight soup and their ensemble on the stress validation; "
                                      "write the chosen model")
    p.add_argument("--member", dest="members", action="append", required=True, help="a member's .keras (repeatable)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for selection.json and the chosen model")
    p.add_argument("--reference", help="the previously shipped model, scored on the same stress set")
    p.add_argument("--version", default="2", help="model_version stamped on the chosen model (default: 2)")
    p.add_argument("--outside", help="folder of counter-examples for the chosen model's population gate")


def _agreement_parser(sub):
    p = sub.add_parser("agreement", help="after selection: score every candidate on the test split (reporting only) and "
                                         "say whether the stress ranking agreed")
    p.add_argument("--selection", required=True, help="selection.json written by 'select'")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", help="where the round's reference model lives now, if not where the selection "
                                       "recorded it (checked against the round's record)")


def _ood_report_parser(sub):
    p = sub.add_parser("ood-report", help="measure the OOD gate: non-X-ray rejection, X-ray false rejection")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="path of the JSON report")


def _population_report_parser(sub):
    p = sub.add_parser("population-report", help="measure the population gate: leave-one-source-out flag and "
                                                 "silent-wrong rates, and the shipped gate per kind of image")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the model was trained on")
    p.add_argument("--outside", required=True, help="folder of counter-examples (see training/outside.py)")
    p.add_argument("--out", required=True, help="path of the JSON report")
    p.add_argument("--features", help="cache of 'python -m training gate-features' (e.g. runs/gate): adds the "
                                      "feature-source comparison (each layer, each model, same folds)")
    p.add_argument("--layers", nargs="+", help="candidate layers to compare (default: all of "
                                               "training/feature_sources.py); folds not in the cache are fitted")


def _gate_features_parser(sub):
    p = sub.add_parser("gate-features", help="cache the candidate feature sources of the population gate (pooled "
                                             "outputs of several layers of each model and of frozen ImageNet Lite0)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="a network to extract from, e.g. v3=model/shipped/pneumonia_efficientnet_lite0.keras; repeat")
    p.add_argument("--data", required=True, help="the dataset folder the models were trained on")
    p.add_argument("--outside", required=True, help="folder of counter-examples (see training/outside.py)")
    p.add_argument("--out-dir", required=True, help="folder for features_*.npz and index.json (e.g. runs/gate)")
    p.add_argument("--only", nargs="+", help="extract just these networks (names given by --model, or imagenet)")


def _card_parser(sub):
    p = sub.add_parser("card", help="render model/MODEL_CARD.md from the metadata and evaluation JSONs")
    p.add_argument("--model", required=True)
    p.add_argument("--test-report", required=True)
    p.add_argument("--ood-report")
    p.add_argument("--baseline-report")
    p.add_argument("--validation-report")
    p.add_argument("--variant-report", dest="variant_reports", action="append",
                   help="evaluation JSON of a variant that was tried (repeatable)")
    p.add_argument("--split-probe-report", help="JSON of 'python -m training split-probe'")
    p.add_argument("--reference-report", dest="reference_reports", action="append",
                   help="test evaluation JSON of a previously shipped model (repeatable)")
    p.add_argument("--selection-report", help="selection.json of 'python -m training select'")
    p.add_argument("--faithfulness-report", help="JSON of 'python -m bench faithfulness' (the shipped model's maps on test)")
    p.add_argument("--agreement-report", help="JSON of 'python -m training agreement'")
    p.add_argument("--population-report", help="JSON of 'python -m training population-report'")
    p.add_argument("--out", default="model/MODEL_CARD.md")


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="metrics and plots of a model on a folder (e.g. the official test split)")
    p.add_argument("--model", required=True, help="path of the .keras model (its .json must sit beside it)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="test", help="sub-folder to evaluate (default: test)")
    p.add_argument("--out", required=True, help="path of the evaluation JSON; plots go beside it")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--record", action="store_true",
                   help="also copy the headline metrics into the model's metadata (metrics.<split>)")


def _run_train(args):
    from training.train import TrainConfig, train

    train(TrainConfig(**args))


def _run_search(args):
    from training.search import search
    from training.train import TrainConfig

    max_trials = args.pop("max_trials")
    for row in search(TrainConfig(**args), max_trials=max_trials):
        print(row)


def _run_refit(args):
    from training.train import refit

    refit(args["model"], args["data"], args.get("outside"), args.get("version"))


def _run_explanations(args):
    from training.train import refit_explanation

    refit_explanation(args["model"], args["data"])


def _run_export(args):
    from training.train import export

    export(args["model"])


def _run_split_probe(args):
    from training.split_probe import split_probe

    split_probe(**args)


def _run_select(args):
    from training.select import select

    select(**args)


def _run_agreement(args):
    from training.select import agreement

    agreement(**args)


def _run_population_report(args):
    from training.population import population_report

    population_report(**args)


def _run_gate_features(args):
    from training.feature_sources import extract

    models = dict(item.split("=", 1) for item in args.pop("model"))
    extract(models, **args)


def _run_ood_report(args):
    from training.ood_eval import evaluate_ood

    evaluate_ood(**args)


def _run_card(args):
    from training.card import write_card

    out = args.pop("out")
    write_card(out, model_path=args.pop("model"), **args)


def _run_evaluate(args):
    from training.evaluate import evaluate

    evaluate(**args)


# name -> (adds the sub-command and its arguments, runs it); in the order of a training run.
# refit and export upgrade an existing model in place (new calibration and thresholds; a missing LiteRT export).
COMMANDS = {
    "train": (_train_parser, _run_train),
    "search": (_search_parser, _run_search),
    "select": (_select_parser, _run_select),
    "evaluate": (_evaluate_parser, _run_evaluate),
    "agreement": (_agreement_parser, _run_agreement),
    "ood-report": (_ood_report_parser, _run_ood_report),
    "gate-features": (_gate_features_parser, _run_gate_features),
    "population-report": (_population_report_parser, _run_population_report),
    "split-probe": (_split_probe_parser, _run_split_probe),
    "card": (_card_parser, _run_card),
    "refit": (_refit_parser, _run_refit),
    "export": (_export_parser, _run_export),
    "explanations": (_explanations_parser, _run_explanations),
}


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    args = vars(parser.parse_args(argv))
    COMMANDS[args.pop("command")][1](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
