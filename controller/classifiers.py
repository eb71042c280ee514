"""ML classifiers as deciders (paper section 4.4): train on metrics traces, save, load, decide.

A model is a scikit-learn pipeline (a standard scaler and one of logistic regression, random
forest, histogram gradient boosting, or an MLP) over
:func:`~rudder.controller.classifier_features.features`,
trained on the paper's labels (:func:`~rudder.controller.classifier_features.label_replacement`).
:class:`ClassifierDecider` serves it behind the ``Decider`` interface and can fine-tune it
online from the observed effects of its own replace decisions.

Model files are pickles (joblib) behind a JSON header: loading one runs code from it, so load
only files you made or trust, never one from the network (docs/classifiers.md). The header is
checked (format, feature names and version, scikit-learn version, payload checksum) *before*
anything is unpickled. scikit-learn is imported inside functions: importing this module is
cheap, and the controller never imports torch, dgl or numba.
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rudder.controller.classifier_features import (
    FEATURE_NAMES,
    FEATURES_VERSION,
    HISTORY_SPAN,
    Dataset,
    LabelRule,
    Outcome,
    collect,
    features,
    label_ready,
    label_replacement,
)
from rudder.decisions import Decider, Decision, implied_effects
from rudder.protocol import Metrics

log = logging.getLogger(__name__)

FORMAT = "rudder-classifier"
FORMAT_VERSION = 1
MODEL_KINDS: tuple[str, ...] = ("lr", "rf", "gbt", "mlp")
INCREMENTAL_KINDS = frozenset({"mlp"})  # fine-tuned by partial_fit; the others are refitted
MAX_HEADER_BYTES = 1 << 20


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


def _fit(pipeline, kind: str, X: np.ndarray, y: np.ndarray):
    if kind == "mlp":  # MLPClassifier has no class_weight: balance with sample weights
        return pipeline.fit(X, y, clf__sample_weight=_balanced_weights(y))
    return pipeline.fit(X, y)


def _fit_logged(pipeline, kind: str, X: np.ndarray, y: np.ndarray):
    """:func:`_fit`, with a convergence warning turned into one log line.

    Main thread only: ``catch_warnings`` changes process-wide state, so refits call ``_fit``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _fit(pipeline, kind, X, y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            log.warning("%s: the optimiser stopped before converging (%d samples)", kind, len(y))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pipeline


@dataclass(slots=True)
class ClassifierModel:
    """A fitted pipeline, its header, and the training samples kept for fine-tuning."""

    kind: str
    pipeline: Any
    header: dict
    kept_features: np.ndarray
    kept_labels: np.ndarray
    path: Path | None = None

    @property
    def rule(self) -> LabelRule:
        return LabelRule(**self.header["label_rule"])

    def replace_probability(self, X: np.ndarray) -> np.ndarray:
        """P(good replacement) for each row of features."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        with single_threaded():
            proba = _predict_proba(self.pipeline, X)
        return proba[:, list(self.pipeline.classes_).index(1)]


@functools.cache
def _openmp():
    """The OpenMP runtimes scikit-learn loaded, as threadpoolctl sees them (found once: 10 ms)."""
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime before the scan)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def single_threaded():
    """A context in which the calling thread's OpenMP regions use one thread (~15 µs).

    HistGradientBoosting predicts and fits with OpenMP teams as large as the machine. A
    one-row prediction gains nothing from a team, and two teams (a decision and a background
    refit) on a small machine stall each other: one-row predictions took up to 0.7 s during a
    refit on 2 cores, and at most 10 ms with this limit. It is per thread and undone on exit.
    """
    return _openmp().limit(limits=1)


def _predict_proba(pipeline, X: np.ndarray) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    forest = pipeline[-1]
    if not isinstance(forest, RandomForestClassifier):
        return pipeline.predict_proba(X)
    # The forest's own predict_proba, summed in the same order, without its per-call overhead
    # (input checks and a joblib dispatch per tree: 10 ms for one row, here 1-2 ms).
    Xs = np.ascontiguousarray(pipeline[:-1].transform(X), dtype=np.float32)
    proba = np.zeros((X.shape[0], len(forest.classes_)))
    for tree in forest.estimators_:
        proba += tree.predict_proba(Xs, check_input=False)
    return proba / len(forest.estimators_)


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


# ---------------------------------------------------------------------------------------------
# The file: one line of JSON header, then a joblib payload (a pickle).


def save(model: ClassifierModel, path: Path) -> Path:
    """Write the model (header line + joblib payload), atomically."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(
        {
            "pipeline": model.pipeline,
            "kept_features": model.kept_features,
            "kept_labels": model.kept_labels,
        },
        buf,
        compress=3,
    )
    payload = buf.getvalue()
    header = {**model.header, "payload_sha256": hashlib.sha256(payload).hexdigest()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        f.write(payload)
    tmp.replace(path)
    model.path = path
    return path


def read_header(path: Path) -> dict:
    """The header of a model file, checked against this code; nothing is unpickled."""
    import sklearn

    path = Path(path)
    with open(path, "rb") as f:
        line = f.readline(MAX_HEADER_BYTES)
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a rudder classifier file (no {FORMAT!r} header)")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: classifier file format version {header.get('version')}, this rudder "
            f"reads version {FORMAT_VERSION}: retrain with `rudder classifier train`"
        )
    names = header.get("feature_names")
    if names != list(FEATURE_NAMES) or header.get("features_version") != FEATURES_VERSION:
        missing = sorted(set(FEATURE_NAMES) - set(names or []))
        extra = sorted(set(names or []) - set(FEATURE_NAMES))
        diff = f"missing {missing}, unknown {extra}" if missing or extra else "another order"
        raise ValueError(
            f"{path}: trained on other features (version {header.get('features_version')}, "
            f"{diff}; this rudder computes version "
            f"{FEATURES_VERSION}: {', '.join(FEATURE_NAMES)}): retrain with `rudder classifier "
            "train`"
        )
    theirs = str(header.get("sklearn_version", "?"))
    if theirs.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise ValueError(
            f"{path}: saved by scikit-learn {theirs}, this is {sklearn.__version__}; pickled "
            "models do not carry across versions: retrain with `rudder classifier train`"
        )
    if header.get("model") not in MODEL_KINDS:
        raise ValueError(f"{path}: unknown model kind {header.get('model')!r}")
    return header


def load(path: Path) -> ClassifierModel:
    """Load a model file made by :func:`save`. It unpickles: only load files you trust."""
    import joblib
    import sklearn

    path = Path(path)
    header = read_header(path)
    with open(path, "rb") as f:
        f.readline(MAX_HEADER_BYTES)
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ValueError(f"{path}: payload does not match its checksum (truncated or altered)")
    if header["sklearn_version"] != sklearn.__version__:
        log.warning("%s: saved by scikit-learn %s", path, header["sklearn_version"])
    data = joblib.load(io.BytesIO(payload))
    return ClassifierModel(
        kind=header["model"],
        pipeline=data["pipeline"],
        header=header,
        kept_features=np.asarray(data["kept_features"], dtype=np.float64),
        kept_labels=np.asarray(data["kept_labels"], dtype=np.int64),
        path=path,
    )


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


# ---------------------------------------------------------------------------------------------
# The decider


@dataclass(slots=True)
class DeciderStats:
    """What a :class:`ClassifierDecider` did, and what it cost."""

    decisions: int = 0
    replace_decisions: int = 0
    labelled: int = 0  # own replace decisions whose effect was observed and labelled
    finetune_updates: int = 0  # partial_fit calls or refits swapped in
    finetune_deferred: int = 0  # updates due while a background refit was still running
    decide_s_total: float = 0.0
    decide_s_max: float = 0.0
    finetune_s_total: float = 0.0  # inline partial_fit or background refit time
    finetune_s_max: float = 0.0

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["decide_ms_mean"] = 1e3 * self.decide_s_total / self.decisions if self.decisions else 0.0
        return d


class ClassifierDecider(Decider):
    """Replace/skip from a trained classifier; optionally fine-tuned online.

    Keeps the last ``HISTORY_SPAN`` metrics for :func:`features`. With ``finetune_every=K``,
    it remembers the features of its replace decisions; when a later record shows the round
    (``replaced > 0``) and then its whole after-window, the round is labelled with the model's
    rule, exactly as offline. Every K labels, an MLP takes one ``partial_fit`` step on them
    (inline, sub-millisecond to a few ms); other kinds are refitted on a bounded buffer (the
    training samples kept in the file, then the newest labels) in a background thread, and the
    new model is swapped in at the next decision: ``decide`` never waits for a refit.
    ``background=False`` refits inline instead (deterministic replays, tests).
    """

    name: ClassVar[str] = "classifier"

    def __init__(
        self,
        model: str | Path | ClassifierModel,
        *,
        threshold: float = 0.5,
        finetune_every: int = 0,
        buffer_size: int = 512,
        background: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if finetune_every < 0 or buffer_size < 1:
            raise ValueError("finetune_every must be >= 0 and buffer_size >= 1")
        # A private copy: fine-tuning must not leak into the caller's model (or other trainers').
        model = copy.deepcopy(model) if isinstance(model, ClassifierModel) else load(Path(model))
        self.model = model
        self.rule = model.rule
        self.threshold = threshold
        self.finetune_every = finetune_every
        self.background = background
        self.stats = DeciderStats()
        self.last_probability: float | None = None
        self.last_decision: Decision | None = None
        self.last_features: np.ndarray | None = None
        self.outcomes: deque[Outcome] = deque(maxlen=256)  # labelled own rounds, newest last
        self._clock = clock
        self._history: deque[Metrics] = deque(maxlen=HISTORY_SPAN)
        self._records: deque[Metrics] = deque(maxlen=4 * self.rule.window + 2)
        self._decided: deque[tuple[int, np.ndarray]] = deque(maxlen=16)  # own replaces
        self._rounds: list[tuple[int, np.ndarray]] = []  # rounds awaiting their label
        self._new: list[tuple[np.ndarray, int]] = []  # labels not yet used
        self._buffer: deque[tuple[np.ndarray, int]] = deque(
            zip(model.kept_features, model.kept_labels.tolist(), strict=True), maxlen=buffer_size
        )
        self._refit: threading.Thread | None = None
        self._refitted: Any = None  # a pipeline a background refit finished
        self._lock = threading.Lock()

    @property
    def spec(self) -> str:
        return f"classifier:{self.model.path}"

    def decide(self, metrics: Metrics) -> Decision:
        t0 = self._clock()
        self._swap_refitted()
        if self._history and metrics.minibatch <= self._history[-1].minibatch:
            self._new_run()  # a restarted trainer or a new replay: the old records mislead
        x = features(metrics, self._history)
        self._history.append(metrics)
        if self.finetune_every:
            self._observe(metrics)
        p = float(self.model.replace_probability(x)[0])
        decision = Decision.REPLACE if p > self.threshold else Decision.SKIP
        if decision is Decision.REPLACE and self.finetune_every:
            self._decided.append((metrics.minibatch, x))
        self.last_probability, self.last_decision, self.last_features = p, decision, x
        s = self.stats
        s.decisions += 1
        s.replace_decisions += decision is Decision.REPLACE
        dt = self._clock() - t0
        s.decide_s_total += dt
        s.decide_s_max = max(s.decide_s_max, dt)
        return decision

    def predicted_effect(self, decision: Decision | None = None) -> dict[str, str]:
        """The effect a decision implies, as ``AgentDecision`` fields (default: the last one)."""
        if decision is None:  # (not `or`: Decision.SKIP is falsy)
            decision = Decision.SKIP if self.last_decision is None else self.last_decision
        hit, comm = implied_effects(decision)
        return {"expected_hit_pct": hit, "expected_communication": comm}

    def wait_finetune(self, timeout_s: float | None = None) -> bool:
        """Wait for a background refit to finish; True when none is running any more."""
        thread = self._refit
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def close(self) -> None:
        """Let a running refit finish (it is a daemon thread; nothing else to release)."""
        self.wait_finetune()

    # -- fine-tuning ------------------------------------------------------------------------

    def _new_run(self) -> None:
        """Forget the previous run's records and pending rounds (labels already made stay)."""
        self._history.clear()
        self._records.clear()
        self._decided.clear()
        self._rounds = []

    def _observe(self, m: Metrics) -> None:
        """Label own past rounds whose effect is now visible; update every K labels."""
        self._records.append(m)
        if m.replaced > 0:
            mine = [d for d in self._decided if d[0] < m.minibatch]
            if mine:  # the newest replace decision before the round is the one it applied
                self._rounds.append((m.minibatch, mine[-1][1]))
            self._decided = deque((d for d in self._decided if d[0] >= m.minibatch), maxlen=16)
        if not self._rounds:
            return
        records = list(self._records)
        index = {r.minibatch: i for i, r in enumerate(records)}
        waiting = []
        for t, x in self._rounds:
            i = index.get(t)
            if i is None:  # fell out of the record window: cannot be labelled any more
                continue
            if not label_ready(records, i, self.rule):
                waiting.append((t, x))
                continue
            outcome = label_replacement(records, i, self.rule)
            if outcome is not None:
                self._new.append((x, int(outcome.good)))
                self.outcomes.append(outcome)
                self.stats.labelled += 1
        self._rounds = waiting
        if len(self._new) >= self.finetune_every:
            self._update()

    def _update(self) -> None:
        if self.model.kind in INCREMENTAL_KINDS:
            X = np.vstack([x for x, _ in self._new])
            y = np.asarray([label for _, label in self._new])
            t0 = self._clock()
            pipe = self.model.pipeline
            # partial_fit on the classifier only: the scaler stays as trained offline.
            pipe[-1].partial_fit(pipe[:-1].transform(X), y)
            self._count_update(self._clock() - t0)
            self._buffer.extend(self._new)
            self._new = []
            return
        if self._refit is not None and self._refit.is_alive():
            self.stats.finetune_deferred += 1  # keep the labels; try again at the next one
            return
        self._buffer.extend(self._new)
        self._new = []
        X = np.vstack([x for x, _ in self._buffer])
        y = np.asarray([label for _, label in self._buffer])
        if len(np.unique(y)) < 2:
            log.debug("fine-tuning skipped: the buffer holds one class")
            return
        if self.background:
            self._refit = threading.Thread(
                target=self._refit_job, args=(X, y), name="classifier-refit", daemon=True
            )
            self._refit.start()
        else:
            self._refit_job(X, y)
            self._swap_refitted()

    def _refit_job(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.base import clone

        t0 = self._clock()
        try:
            with single_threaded():  # see single_threaded(): keeps decisions responsive
                pipe = _fit(clone(self.model.pipeline), self.model.kind, X, y)
        except Exception:  # a failed refit keeps the current model; decisions go on
            log.exception("classifier refit failed; keeping the current model")
            return
        with self._lock:
            self._refitted = (pipe, self._clock() - t0)

    def _swap_refitted(self) -> None:
        with self._lock:
            done, self._refitted = self._refitted, None
        if done is not None:
            self.model.pipeline, seconds = done
            self._count_update(seconds)

    def _count_update(self, seconds: float) -> None:
        s = self.stats
        s.finetune_updates += 1
        s.finetune_s_total += seconds
        s.finetune_s_max = max(s.finetune_s_max, seconds)
