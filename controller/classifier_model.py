"""A trained classifier decider's model and its file: what is saved, and how it is read back.

It exists apart from training and serving because the file is the security boundary. Model
files are pickles (joblib) behind a JSON header: loading one runs code from it, so load only
files you made or trust, never one from the network (docs/classifiers.md). :func:`read_header`
checks the header (format, feature names and version, scikit-learn version) and :func:`load`
the payload's sha256 *before* anything is unpickled; nothing else here unpickles. Predictions
run with one OpenMP thread (:func:`single_threaded`). scikit-learn is imported inside
functions: importing this module is cheap.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rudder.controller.classifier_features import FEATURE_NAMES, FEATURES_VERSION, LabelRule

log = logging.getLogger(__name__)

FORMAT = "rudder-classifier"
FORMAT_VERSION = 1
MODEL_KINDS: tuple[str, ...] = ("lr", "rf", "gbt", "mlp")
MAX_HEADER_BYTES = 1 << 20


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
