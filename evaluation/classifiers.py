"""The classifier deciders the bench trains before it uses them (paper 4.4: offline, on traces).

A recorded access trace does not say what replacing at other moments would have done, so the
trace is replayed with *teacher* rules (replace every P minibatches, the heuristic) at each
buffer size; the per-minibatch metrics of those replays carry many replacement rounds, which
the paper's rule labels good or bad (``rudder classifier train`` does the same from files).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from rudder.evaluation.config import ClassifierSpec
from rudder.metrics_trace import metrics_line
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.trace import AccessTrace

log = logging.getLogger(__name__)


def teach(
    traces: Sequence[AccessTrace],
    fractions: Sequence[float],
    teachers: Sequence[str],
    out: Path,
) -> list[Path]:
    """Metrics traces (JSON lines) of the rudder policy under each teacher rule."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for trace in traces:
        for f in fractions:
            for teacher in teachers:
                path = out / f"t{trace.meta.trainer}-b{f:g}-{teacher.replace(':', '')}.jsonl"
                with path.open("w") as fh:
                    replay(
                        trace,
                        "rudder",
                        ReplayConfig(buffer_fraction=f, decider=teacher),
                        on_metrics=lambda m, fh=fh: fh.write(metrics_line(m)),
                    )
                files.append(path)
    return files


def train_all(
    kinds: Sequence[str], metrics: Sequence[Path], spec: ClassifierSpec, out: Path
) -> dict[str, dict]:
    """Fit and save one model per kind (``out/KIND.joblib``); their training reports."""
    from rudder.controller.classifier_features import LabelRule
    from rudder.controller.classifiers import TrainConfig, save, train

    reports = {}
    for kind in kinds:
        config = TrainConfig(model=kind, seed=spec.seed, rule=LabelRule(window=spec.label_window))
        model, report = train(list(metrics), config)
        save(model, out / f"{kind}.joblib")
        reports[kind] = report.to_dict()
        log.info(
            "classifier %s: %d samples, test accuracy %s",
            kind,
            report.samples,
            f"{report.test_accuracy:.3f}" if report.test_accuracy is not None else "-",
        )
    return reports


def accuracy(kinds: Sequence[str], models: Path, metrics: Sequence[Path]) -> dict[str, dict]:
    """Each model's accuracy against the paper's labels on other metrics traces."""
    from rudder.controller.classifiers import evaluate

    out = {}
    for kind in kinds:
        r = evaluate(models / f"{kind}.joblib", list(metrics))
        out[kind] = {k: r[k] for k in ("samples", "good", "accuracy", "balanced_accuracy")}
        out[kind]["majority_baseline"] = r["majority_baseline"]
        out[kind]["replace_rate"] = r["replace_rate"]
    return out
