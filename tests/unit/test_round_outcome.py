"""The round outcomes (metrics version 3): what the recent rounds' rows did since they moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.round_outcome import OutcomeTracker, RoundOutcome
from rudder.trainer_hooks.trace import load_trace

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def lookup(tracker: OutcomeTracker, t: int, hits: list[int], misses: list[int]) -> None:
    ids = np.array(hits + misses, dtype=np.int64)
    slots = np.array([0] * len(hits) + [-1] * len(misses), dtype=np.int32)
    tracker.observe(ids, slots, t)


def test_no_round_means_nothing_observed():
    tr = OutcomeTracker(span=4)
    lookup(tr, 0, [1, 2], [3])
    assert tr.outcome(0) == RoundOutcome()


def test_hits_on_admitted_rows_and_misses_on_evicted_ones_count_until_the_round_leaves():
    tr = OutcomeTracker(span=3)
    lookup(tr, 0, [], [10, 11, 12])
    tr.on_round(np.array([10, 11]), np.array([20, 21]), 0)
    assert tr.outcome(0) == RoundOutcome(rounds=1, rows=2, admit_hits=0, ghost_misses=0)
    lookup(tr, 1, [10, 30], [20, 40])  # one admitted row hit, one evicted row missed again
    lookup(tr, 2, [10, 11], [21, 20])
    assert tr.outcome(2) == RoundOutcome(rounds=1, rows=2, admit_hits=3, ghost_misses=3)
    lookup(tr, 3, [10], [20])  # the span (3) now starts after the round: forgotten
    assert tr.outcome(3) == RoundOutcome()


def test_each_round_of_the_span_counts_its_own_rows():
    tr = OutcomeTracker(span=8)
    tr.on_round(np.array([1, 2]), np.array([], dtype=np.int64), 0)
    tr.on_round(np.array([2, 3]), np.array([9]), 1)
    lookup(tr, 2, [2, 3], [9])
    # Row 2 was put in by both rounds: it counts for both.
    assert tr.outcome(2) == RoundOutcome(rounds=2, rows=4, admit_hits=3, ghost_misses=1)


def test_span_must_be_positive():
    with pytest.raises(ValueError, match="span >= 1"):
        OutcomeTracker(span=0)


@pytest.mark.parametrize(
    ("trace", "paying"),
    [("distdgl-locality-rank-0.npz", True), ("distdgl-stationary-rank-0.npz", False)],
)
def test_rounds_pay_under_drift_and_churn_on_steady_access(trace, paying):
    """Replayed with a round every minibatch: under locality drift the rows rounds put in are
    hit well over 1.5 times per miss they cause; on shuffled (stationary) access they are not.
    The relation the heuristic's ``min_round_payoff`` and decision-v4 rely on."""
    records = []
    replay(
        load_trace(TRACES / trace),
        "rudder",
        ReplayConfig(buffer_fraction=0.25, decider="always"),
        on_metrics=records.append,
    )
    hits = sum(m.round_admit_hits for m in records)
    ghosts = sum(m.round_ghost_misses for m in records)
    assert all(m.round_rows_window > 0 for m in records[1:])  # a round in every window
    assert (hits >= 1.5 * ghosts) is paying
