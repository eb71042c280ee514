"""``rudder classifier``: train ML deciders on metrics traces, evaluate them, inspect files."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rudder.cli.common import positive_int

log = logging.getLogger(__name__)

KINDS = ("lr", "rf", "gbt", "mlp")  # rudder.controller.classifiers.MODEL_KINDS (checked there)


def _test_fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classifier", help="train and evaluate ML classifier deciders")
    csub = p.add_subparsers(dest="classifier_command", metavar="SUBCOMMAND", required=True)

    t = csub.add_parser(
        "train",
        help="train a classifier on metrics traces",
        description="Label every replacement round in the metrics traces with the paper's rule "
        "(good when the gain in %-hits exceeds the relative growth of communication), fit a "
        "scaler + classifier pipeline on the features of the metrics each decision was made "
        "on, report accuracy on a held-out split, and save the model (a JSON header and a "
        "joblib pickle: keep it local, never load one from the network).",
    )
    t.add_argument(
        "--traces",
        nargs="+",
        required=True,
        type=Path,
        help="metrics traces (JSON lines): files, or directories searched for *.jsonl",
    )
    t.add_argument("--model", choices=KINDS, default="lr", help="classifier kind")
    t.add_argument("--out", required=True, type=Path, help="model file to write (.joblib)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--test-fraction",
        type=_test_fraction,
        default=0.2,
        help="samples held out for the reported test accuracy (0: train on all)",
    )
    t.add_argument(
        "--label-window",
        type=positive_int,
        default=4,
        help="minibatches before and after a round that its label compares",
    )
    t.add_argument("--json", type=Path, help="also write the training report here")
    t.set_defaults(func=run_train)

    e = csub.add_parser(
        "eval",
        help="accuracy of a model against the paper's labels on metrics traces",
        description="Label the replacement rounds of the traces with the model's own rule and "
        "report the model's accuracy, balanced accuracy and confusion matrix.",
    )
    e.add_argument("--model", required=True, type=Path, help="a model file you trust")
    e.add_argument("--traces", nargs="+", required=True, type=Path)
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)

    i = csub.add_parser("info", help="show a model file's header (nothing is unpickled)")
    i.add_argument("model", type=Path)
    i.set_defaults(func=run_info)


def _confusion_lines(confusion: list[list[int]]) -> list[str]:
    (tn, fp), (fn, tp) = confusion
    return [
        "confusion (rows: labelled, columns: predicted)",
        "              skip  replace",
        f"  bad      {tn:7d}  {fp:7d}",
        f"  good     {fn:7d}  {tp:7d}",
    ]


def run_train(args: argparse.Namespace) -> int:
    from rudder.controller.classifier_features import LabelRule
    from rudder.controller.classifiers import TrainConfig, save, train

    config = TrainConfig(
        model=args.model,
        seed=args.seed,
        test_fraction=args.test_fraction,
        rule=LabelRule(window=args.label_window),
    )
    model, report = train(args.traces, config)
    path = save(model, args.out)
    training = model.header["training"]
    bad = report.samples - report.good
    lines = [
        f"{len(training['traces'])} trace(s), "
        f"{sum(t['rounds'] for t in training['traces'])} replacement rounds, "
        f"{report.samples} labelled samples: {report.good} good "
        f"({report.good / report.samples:.0%}), {bad} bad",
        f"model {report.model}: train accuracy {report.train_accuracy:.3f} "
        f"({report.train_samples} samples)",
    ]
    if report.test_accuracy is not None:
        lines.append(
            f"test accuracy {report.test_accuracy:.3f} "
            f"(balanced {report.test_balanced_accuracy:.3f}, "
            f"majority baseline {report.majority_baseline:.3f}, {report.test_samples} samples)"
        )
        lines += _confusion_lines(report.confusion)
    lines.append(f"wrote {path}")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from rudder.controller.classifiers import evaluate

    result = evaluate(args.model, args.traces)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    lines = [
        f"model {result['model']} ({result['path']}) on {len(result['traces'])} trace(s): "
        f"{result['samples']} labelled rounds, {result['good']} good",
        f"accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}, "
        f"majority baseline {result['majority_baseline']:.3f}), "
        f"predicts replace for {result['replace_rate']:.0%}",
        *_confusion_lines(result["confusion"]),
    ]
    print("\n".join(lines))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from rudder.controller.classifiers import read_header

    print(json.dumps(read_header(args.model), indent=2))
    return 0
