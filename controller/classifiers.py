"""ML classifiers as deciders (paper section 4.4): serving a trained model, fine-tuning it.

:class:`ClassifierDecider` serves a model behind the ``Decider`` interface and can fine-tune it
online from the observed effects of its own replace decisions. Training and evaluation live in
``classifier_training.py``, the model and its checked file in ``classifier_model.py`` (load
only files you made or trust: docs/classifiers.md); their public names are re-exported here,
the module the CLI, the evaluation scripts and the docs import. scikit-learn is imported
inside functions: importing this module is cheap, and the controller never imports torch,
dgl or numba.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rudder.controller.classifier_features import (
    HISTORY_SPAN,
    Outcome,
    features,
    label_ready,
    label_replacement,
)
from rudder.controller.classifier_model import (
    FORMAT,
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    MODEL_KINDS,
    ClassifierModel,
    load,
    read_header,
    save,
    single_threaded,
)
from rudder.controller.classifier_training import (
    TrainConfig,
    TrainReport,
    build_pipeline,
    evaluate,
    fit_pipeline,
    train,
    train_on,
)
from rudder.decisions import Decider, Decision, implied_effects
from rudder.protocol import Metrics

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INCREMENTAL_KINDS",
    "MAX_HEADER_BYTES",
    "MODEL_KINDS",
    "ClassifierDecider",
    "ClassifierModel",
    "DeciderStats",
    "TrainConfig",
    "TrainReport",
    "build_pipeline",
    "evaluate",
    "load",
    "read_header",
    "save",
    "single_threaded",
    "train",
    "train_on",
]

log = logging.getLogger(__name__)

INCREMENTAL_KINDS = frozenset({"mlp"})  # fine-tuned by partial_fit; the others are refitted


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
                pipe = fit_pipeline(clone(self.model.pipeline), self.model.kind, X, y)
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
