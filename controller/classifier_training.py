"""Training classifier deciders on metrics traces, and evaluating them (paper section 4.4).

A model is a scikit-learn pipeline (a standard scaler and one of logistic regression, random
forest, histogram gradient boosting, or an MLP) over
:func:`~rudder.controller.classifier_features.features`,
trained on the paper's labels (:func:`~rudder.controller.classifier_features.label_replacement`).
It exists apart from the model file (``classifier_model.py``) and the decider that serves it
(``classifiers.py``): the offline path (``rudder classifier train/eval``) lives here, and the
decider only borrows :func:`fit_pipeline` for its online refits. scikit-learn is imported
inside functions: importing this module is cheap.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rudder.controller.classifier_features import (
    FEATURE_NAMES,
    FEATURES_VERSION,
    Dataset,
    LabelRule,
    collect,
)
from rudder.controller.classifier_model import (
    FORMAT,
    FORMAT_VERSION,
    MODEL_KINDS,
    ClassifierModel,
    load,
)

log = logging.getLogger(__name__)


def build_pipeline(kind: str, seed: int):
    """An unfitted scaler + classifier pipeline of ``kind``; classes are weighted to balance."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    estimators = {
        "lr": lambda: LogisticRegression(class_weight="balanced", max_iter=1000),
        "rf": lambda: RandomForestClassifier(
            n_estimators=50, min_samples_leaf=3, class_weight="balanced", random_state=seed
        ),
        "gbt": lambda: HistGradientBoostingClassifier(
            max_iter=100, max_leaf_nodes=15, class_weight="balanced", random_state=seed
        ),
        # One logistic output unit: predict_proba applies the sigmoid once (the authors' MLP
        # applied it twice and always answered replace).
        "mlp": lambda: MLPClassifier(
            hidden_layer_sizes=(32, 16), alpha=1e-3, max_iter=1000, random_state=seed
        ),
    }
    if kind not in estimators:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return Pipeline([("scale", StandardScaler()), ("clf", estimators[kind]())])


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return (len(y) / (2.0 * counts))[y]


def fit_pipeline(pipeline, kind: str, X: np.ndarray, y: np.ndarray):
    """Fit ``pipeline`` (of ``kind``) on ``X``, ``y``; also the decider's online refits."""
    if kind == "mlp":  # MLPClassifier has no class_weight: balance with sample weights
        return pipeline.fit(X, y, clf__sample_weight=_balanced_weights(y))
    return pipeline.fit(X, y)


def _fit_logged(pipeline, kind: str, X: np.ndarray, y: np.ndarray):
    """:func:`fit_pipeline`, with a convergence warning turned into one log line.

    Main thread only: ``catch_warnings`` changes process-wide state, so refits call
    ``fit_pipeline``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit_pipeline(pipeline, kind, X, y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            log.warning("%s: the optimiser stopped before converging (%d samples)", kind, len(y))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pipeline


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """How to train: model kind, seed, the held-out fraction, the labelling rule."""

    model: str = "lr"
    seed: int = 0
    test_fraction: float = 0.2
    rule: LabelRule = field(default_factory=LabelRule)
    keep_samples: int = 256  # training samples stored in the file to seed fine-tuning refits

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(
                f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KINDS)}"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test fraction must lie in [0, 1), got {self.test_fraction}")
        if self.keep_samples < 0:
            raise ValueError("keep_samples must be >= 0")


@dataclass(slots=True)
class TrainReport:
    """What training measured; printed by the CLI and stored in the model header."""

    model: str
    samples: int
    good: int
    train_samples: int
    test_samples: int
    train_accuracy: float
    test_accuracy: float | None
    test_balanced_accuracy: float | None
    majority_baseline: float | None  # accuracy of always answering the training majority
    confusion: list[list[int]] | None  # test set; rows: true bad, good; columns: predicted
    seconds: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def _accuracy_stats(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, list[list[int]]]:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    acc = float(np.mean(pred == y))
    bal = float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else acc
    return acc, bal, confusion_matrix(y, pred, labels=[0, 1]).tolist()


def train_on(dataset: Dataset, config: TrainConfig) -> tuple[ClassifierModel, TrainReport]:
    """Fit a model on labelled samples; ValueError if they cannot train a classifier."""
    import sklearn
    from sklearn.model_selection import train_test_split

    X, y = dataset.X, dataset.y
    n_traces = len(dataset.traces)
    if dataset.rounds == 0:
        raise ValueError(
            f"no replacement rounds in {n_traces} metrics trace(s): record traces with rounds, "
            "e.g. `rudder replay --policy rudder --decider every:4 --metrics-out m.jsonl`"
        )
    if len(y) == 0:
        raise ValueError(
            f"{dataset.rounds} replacement rounds but none could be labelled (each needs "
            f"{config.rule.min_before} minibatch before and {config.rule.min_after} from the "
            "round on, with no other round in between)"
        )
    good = int(y.sum())
    if good in (0, len(y)):
        which = "good" if good else "bad"
        raise ValueError(
            f"all {len(y)} samples are labelled {which}: a classifier needs both classes; "
            "add traces with other deciders, buffer sizes or graphs"
        )
    start = time.perf_counter()
    if config.test_fraction > 0:
        if min(good, len(y) - good) < 2:
            raise ValueError(
                f"too few samples of one class ({good} good, {len(y) - good} bad) to hold "
                "some out: use --test-fraction 0 or more traces"
            )
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=config.test_fraction, random_state=config.seed, stratify=y
        )
    else:
        X_tr, y_tr, X_te, y_te = X, y, X[:0], y[:0]
    pipeline = _fit_logged(build_pipeline(config.model, config.seed), config.model, X_tr, y_tr)
    train_acc = float(np.mean(pipeline.predict(X_tr) == y_tr))
    test_acc = bal = baseline = confusion = None
    if len(y_te):
        test_acc, bal, confusion = _accuracy_stats(y_te, pipeline.predict(X_te))
        majority = int(2 * y_tr.sum() >= len(y_tr))
        baseline = float(np.mean(y_te == majority))
    report = TrainReport(
        model=config.model,
        samples=len(y),
        good=good,
        train_samples=len(y_tr),
        test_samples=len(y_te),
        train_accuracy=train_acc,
        test_accuracy=test_acc,
        test_balanced_accuracy=bal,
        majority_baseline=baseline,
        confusion=confusion,
        seconds=time.perf_counter() - start,
    )
    keep = np.random.default_rng(config.seed).permutation(len(y_tr))[: config.keep_samples]
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": config.model,
        "feature_names": list(FEATURE_NAMES),
        "features_version": FEATURES_VERSION,
        "label_rule": config.rule.to_dict(),
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "training": {"traces": dataset.traces, "samples": len(y), "good": good},
        "report": report.to_dict(),
    }
    model = ClassifierModel(config.model, pipeline, header, X_tr[keep], y_tr[keep])
    return model, report


def train(traces: Sequence[Path], config: TrainConfig) -> tuple[ClassifierModel, TrainReport]:
    """Collect labelled samples from metrics traces (files or directories) and fit a model."""
    return train_on(collect(traces, config.rule), config)


def evaluate(
    model: Path | str | ClassifierModel, traces: Sequence[Path], rule: LabelRule | None = None
) -> dict:
    """Accuracy against the paper's labels on (held-out) metrics traces.

    The labels use the model's own rule unless ``rule`` is given. ``majority_baseline`` is
    the accuracy of always giving the answer the model's training data gave most.
    """
    model = model if isinstance(model, ClassifierModel) else load(Path(model))
    ds = collect(traces, rule or model.rule)
    if len(ds.y) == 0:
        raise ValueError(f"no labelled replacement rounds in {len(ds.traces)} metrics trace(s)")
    pred = (model.replace_probability(ds.X) > 0.5).astype(np.int64)
    acc, bal, confusion = _accuracy_stats(ds.y, pred)
    training = model.header.get("training", {})
    majority = int(2 * training.get("good", 0) >= training.get("samples", 0))
    return {
        "model": model.kind,
        "path": str(model.path) if model.path else None,
        "samples": len(ds.y),
        "good": int(ds.y.sum()),
        "accuracy": acc,
        "balanced_accuracy": bal,
        "majority_baseline": float(np.mean(ds.y == majority)),
        "replace_rate": float(pred.mean()),
        "confusion": confusion,
        "traces": ds.traces,
    }
