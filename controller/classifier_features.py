"""What a classifier sees and learns from: features of a trainer's metrics, and the paper's labels.

:func:`features` is the *only* way a feature vector is made, offline (training on metrics
traces) and online (:class:`~rudder.controller.classifiers.ClassifierDecider`). It reads the
current :class:`Metrics` and the earlier metrics of the same trainer within the last
``HISTORY_SPAN`` minibatches, nothing else, so a decider that keeps the last ``HISTORY_SPAN``
records gets exactly the vector training saw. (The authors' code fed training and serving
different features; see docs/classifiers.md.)

:func:`label_replacement` is the paper's rule (section 4.4): a replacement round is *good*
when the change in %-hits exceeds the relative change in communication. Windows and the tie
rule are stated on :class:`LabelRule`.

Imports numpy only: the controller never imports torch, dgl or numba.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rudder.metrics_trace import find_metrics_traces, read_metrics_per_trainer
from rudder.protocol import Metrics

log = logging.getLogger(__name__)

FEATURES_VERSION = 3  # bump on any change to what a feature means or how it is computed
HISTORY_SPAN = 8  # features read metrics of the last 8 minibatches (the trainers' window)
TREND_LAG = 4  # "recent change" compares with the metrics of up to 4 minibatches ago
SINCE_CAP = 32  # minibatches since the latest round, saturating here

FEATURE_NAMES: tuple[str, ...] = (
    "hit_frac",  # %-hits of this minibatch / 100
    "hit_window_frac",  # windowed %-hits / 100
    "hit_cumulative_frac",  # %-hits of the run so far / 100
    "hit_vs_window",  # this minibatch's %-hits minus the window's, / 100
    "hit_window_trend",  # windowed %-hits now minus TREND_LAG minibatches ago, / 100
    "fetch_frac",  # rows pulled / remote inputs, this minibatch (> 1 with extra rows)
    "fetch_window_frac",  # mean rows pulled / mean remote inputs over the window
    "rows_window_trend",  # relative change of mean rows pulled vs TREND_LAG ago, in [-1, 4]
    "stale_frac",  # replaceable slots / capacity
    "fill_frac",  # occupied slots / capacity
    "last_replaced_frac",  # entries the latest round put in / capacity
    "since_replacement",  # minibatches since the latest round / SINCE_CAP, capped at 1
    "never_replaced",  # 1 before the first round, else 0
    "progress",  # (minibatch + 1) / total minibatches (0 when the total is unknown)
    # Version 2, the grounding (metrics version 2): what a round now would do.
    "hit_window_shift",  # windowed %-hits minus those of the window before, / 100 (drift)
    "repeat_miss_frac",  # misses also missed earlier in the window / misses
    "swap_frac",  # rows a round would put in / capacity
    "evict_use",  # hits per row it would evict over the window / window (0..1)
    "admit_use",  # misses per row it would admit over the window / window (0..1)
    # Version 3, the outcomes (metrics version 3): what the rounds of the window did since.
    "rounds_in_window",  # 1 when a round ran in the window (the next two are then observed)
    "round_payoff",  # hits on their rows / (those hits + misses on rows they took out), 0..1
    "round_rows_frac",  # rows they put in / capacity, capped at 1
)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _recent(current: Metrics, history: Iterable[Metrics]) -> list[Metrics]:
    """The earlier records of ``current``'s trainer within the feature span, oldest first."""
    lo = current.minibatch - HISTORY_SPAN
    return sorted(
        (
            h
            for h in history
            if h.trainer == current.trainer and lo <= h.minibatch < current.minibatch
        ),
        key=lambda h: h.minibatch,
    )


def features(current: Metrics, history: Sequence[Metrics]) -> np.ndarray:
    """The feature vector (float64, ``len(FEATURE_NAMES)``) of ``current`` given its history.

    ``history`` holds earlier metrics of the trainer, in any order, with or without gaps
    (dropped requests); records outside the last ``HISTORY_SPAN`` minibatches, later ones, and
    other trainers' are ignored, so the full trace and a short ring buffer give the same
    vector. Every feature is a fraction or a ratio, free of graph and batch sizes.
    """
    m = current
    recent = _recent(m, history)
    # The reference for "recent change": the oldest record within TREND_LAG minibatches.
    ref = next((h for h in recent if h.minibatch >= m.minibatch - TREND_LAG), None)
    in_window = [*recent, m]
    mean_remote = sum(h.remote_inputs for h in in_window) / len(in_window)
    cap = m.buffer_capacity

    hit_trend = (m.hit_pct_window - ref.hit_pct_window) / 100.0 if ref else 0.0
    if ref is None:
        rows_trend = 0.0
    else:
        rows_trend = _ratio(
            m.rows_fetched_window - ref.rows_fetched_window, ref.rows_fetched_window
        )
        rows_trend = min(max(rows_trend, -1.0), 4.0)
    since = 1.0 if m.since_replacement < 0 else min(m.since_replacement, SINCE_CAP) / SINCE_CAP
    x = (
        m.hit_pct / 100.0,
        m.hit_pct_window / 100.0,
        m.hit_pct_cumulative / 100.0,
        (m.hit_pct - m.hit_pct_window) / 100.0,
        hit_trend,
        _ratio(m.rows_fetched, m.remote_inputs),
        _ratio(m.rows_fetched_window, mean_remote),
        rows_trend,
        _ratio(m.stale_slots, cap),
        _ratio(m.buffer_fill, cap),
        _ratio(m.last_replaced, cap),
        since,
        1.0 if m.replacements == 0 else 0.0,
        _ratio(m.minibatch + 1, m.total_minibatches),
        (m.hit_pct_window - m.hit_pct_prev_window) / 100.0,
        m.repeat_miss_pct / 100.0,
        _ratio(m.round_swap_rows, cap),
        _ratio(m.round_evict_use, m.window),
        _ratio(m.round_admit_use, m.window),
        1.0 if m.round_rows_window else 0.0,
        _ratio(m.round_admit_hits, m.round_admit_hits + m.round_ghost_misses),
        min(_ratio(m.round_rows_window, cap), 1.0),
    )
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelRule:
    """The paper's labelling rule with its windows made exact.

    A round at minibatch ``t`` (``replaced > 0``), the previous round at ``p`` (if any) and the
    next at ``n`` (if any):

    - *before*: minibatches ``max(p + 1, t - window) .. t - 1``: the state the decision saw,
      after the previous round's own minibatch (whose pull carried that round's rows).
    - *after*: minibatches ``t .. min(n - 1, t + window - 1)``: up to the next round.
      Communication counts all of them (the round's rows are pulled at ``t``); %-hits count
      ``t + 1 ..`` only, since the entries a round puts in serve hits from the next minibatch.
    - %-hits of a window = 100 x hits / remote inputs, summed over it; communication = mean
      rows fetched per minibatch (misses plus extra rows).
    - ``dH`` = hits after - hits before (percentage points); ``dC`` = 100 x (rows after - rows
      before) / rows before (percent; +inf when nothing was pulled before and something after,
      0 when nothing either time).
    - **good** (replace) iff ``dH > dC``; a tie is **bad**: a round that buys nothing is not
      worth its churn, and skip is the safe answer.
    - No label unless *before* has ``min_before`` minibatches and *after* has ``min_after``
      (at least one minibatch of effect): rounds on back-to-back minibatches, and rounds whose
      after-window runs past the end of the trace before ``window`` minibatches, stay unlabelled.
    """

    window: int = 4
    min_before: int = 1
    min_after: int = 2

    def __post_init__(self) -> None:
        if self.min_after < 2 or self.min_before < 1:
            raise ValueError("labels: min_after must be >= 2 and min_before >= 1")
        if self.window < self.min_after:
            raise ValueError(f"labels: window ({self.window}) must be >= min_after")

    def to_dict(self) -> dict[str, int]:
        return {"window": self.window, "min_before": self.min_before, "min_after": self.min_after}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The measured effect of one replacement round, and its label."""

    minibatch: int  # the round's minibatch t
    before: tuple[int, int]  # first and last minibatch of each window
    after: tuple[int, int]
    hit_pct_before: float
    hit_pct_after: float
    rows_before: float  # mean rows fetched per minibatch
    rows_after: float
    d_hit: float  # percentage points
    d_comm: float  # percent

    @property
    def good(self) -> bool:
        """The paper's rule: the gain in %-hits outweighs the growth of communication."""
        return self.d_hit > self.d_comm


def _round_at(m: Metrics) -> int | None:
    """The minibatch of the latest round as ``m`` knows it (None before any)."""
    return m.minibatch - m.since_replacement if m.since_replacement >= 0 else None


def _next_round(metrics: Sequence[Metrics], index: int) -> int | None:
    """The minibatch of the first round after ``metrics[index]``'s, if the records show one."""
    t = metrics[index].minibatch
    for h in metrics[index + 1 :]:
        r = _round_at(h)
        if r is not None and r > t:
            return r
    return None


def label_ready(metrics: Sequence[Metrics], index: int, rule: LabelRule | None = None) -> bool:
    """Whether the records show the whole after-window of ``metrics[index]``'s round.

    True once a record ``window - 1`` minibatches past the round, or a later round, is in.
    Until then an online labeller waits; offline, a round this close to the end of the trace
    stays unlabelled.
    """
    rule = rule or LabelRule()
    t = metrics[index].minibatch
    if metrics[-1].minibatch >= t + rule.window - 1:
        return True
    return _next_round(metrics, index) is not None


def label_replacement(
    metrics: Sequence[Metrics], index: int, rule: LabelRule | None = None
) -> Outcome | None:
    """Label the round of ``metrics[index]`` (which must have ``replaced > 0``).

    ``metrics`` is one trainer's records in minibatch order; gaps (dropped requests) are
    allowed: windows are ranges of minibatch indices and use whichever records fall in them.
    Returns None when the after-window is not complete yet (:func:`label_ready`) or either
    window is too short (see :class:`LabelRule`).
    """
    rule = rule or LabelRule()
    m = metrics[index]
    if m.replaced <= 0:
        raise ValueError(f"minibatch {m.minibatch} has no replacement round to label")
    if not label_ready(metrics, index, rule):
        return None
    t = m.minibatch
    prev = _round_at(metrics[index - 1]) if index > 0 else None  # the round before t
    nxt = _next_round(metrics, index)
    lo = t - rule.window if prev is None else max(prev + 1, t - rule.window)
    hi = t + rule.window - 1 if nxt is None else min(nxt - 1, t + rule.window - 1)
    if t - lo < rule.min_before or hi - t + 1 < rule.min_after:
        return None
    before = [h for h in metrics[:index] if h.minibatch >= lo]
    after = [h for h in metrics[index:] if h.minibatch <= hi]
    effect = after[1:]  # minibatches t + 1 .. hi
    if not before or not effect:
        return None

    def hit_pct(window: list[Metrics]) -> float:
        return 100.0 * _ratio(sum(h.hits for h in window), sum(h.remote_inputs for h in window))

    def rows(window: list[Metrics]) -> float:
        return sum(h.rows_fetched for h in window) / len(window)

    h0, h1 = hit_pct(before), hit_pct(effect)
    c0, c1 = rows(before), rows(after)
    d_comm = 100.0 * (c1 - c0) / c0 if c0 > 0 else (math.inf if c1 > 0 else 0.0)
    return Outcome(
        minibatch=t,
        before=(before[0].minibatch, before[-1].minibatch),
        after=(after[0].minibatch, after[-1].minibatch),
        hit_pct_before=h0,
        hit_pct_after=h1,
        rows_before=c0,
        rows_after=c1,
        d_hit=h1 - h0,
        d_comm=d_comm,
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One training example: the features a decision was made on, and how its round went."""

    trainer: int
    minibatch: int  # the metrics the decision was made on
    x: np.ndarray
    outcome: Outcome

    @property
    def label(self) -> int:
        """1 = good (replace), 0 = bad (skip)."""
        return int(self.outcome.good)


@dataclass(frozen=True, slots=True)
class TraceSamples:
    """What one metrics trace yields."""

    samples: list[Sample]
    rounds: int  # replacement rounds seen
    unlabelled: int  # rounds without complete windows or without a decision before them


def samples_from_metrics(metrics: Sequence[Metrics], rule: LabelRule | None = None) -> TraceSamples:
    """Labelled samples from one trainer's metrics in minibatch order (the training path).

    A round at ``metrics[i]`` was decided on the record before it, ``metrics[i - 1]`` (a
    synchronous decider: latency 1); its features are ``features(metrics[i - 1], earlier)``, the
    same call the decider makes.
    """
    rule = rule or LabelRule()
    out: list[Sample] = []
    rounds = unlabelled = 0
    for i, m in enumerate(metrics):
        if m.replaced <= 0:
            continue
        rounds += 1
        outcome = label_replacement(metrics, i, rule) if i > 0 else None
        if outcome is None:
            unlabelled += 1
            continue
        d = metrics[i - 1]
        # The last HISTORY_SPAN records hold every record features() reads (distinct, ordered
        # minibatches); slicing keeps collection linear in the trace length.
        history = metrics[max(0, i - 1 - HISTORY_SPAN) : i - 1]
        out.append(Sample(d.trainer, d.minibatch, features(d, history), outcome))
    return TraceSamples(out, rounds, unlabelled)


@dataclass(slots=True)
class Dataset:
    """Samples from several traces, with what went into them."""

    X: np.ndarray
    y: np.ndarray
    traces: list[dict]  # per trace file: path, trainers, minibatches, rounds, samples, good

    @property
    def rounds(self) -> int:
        return sum(t["rounds"] for t in self.traces)


def collect(paths: Sequence[Path], rule: LabelRule | None = None) -> Dataset:
    """Labelled samples from metrics traces (files or directories, see ``rudder.metrics_trace``)."""
    rule = rule or LabelRule()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    summary: list[dict] = []
    for path in find_metrics_traces(paths):
        per_trainer = read_metrics_per_trainer(path)
        rounds = unlabelled = n = good = minibatches = 0
        for ms in per_trainer.values():
            got = samples_from_metrics(ms, rule)
            rounds, unlabelled = rounds + got.rounds, unlabelled + got.unlabelled
            minibatches += len(ms)
            for s in got.samples:
                xs.append(s.x)
                ys.append(s.label)
                n, good = n + 1, good + s.label
        summary.append(
            {
                "path": str(path),
                "trainers": sorted(per_trainer),
                "minibatches": minibatches,
                "rounds": rounds,
                "unlabelled": unlabelled,
                "samples": n,
                "good": good,
            }
        )
        log.debug("%s: %d rounds, %d samples (%d good)", path, rounds, n, good)
    X = np.vstack(xs) if xs else np.empty((0, len(FEATURE_NAMES)))
    return Dataset(X=X, y=np.asarray(ys, dtype=np.int64), traces=summary)
