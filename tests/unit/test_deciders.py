import dataclasses

import pytest

from rudder.decisions import Decision
from rudder.protocol import Metrics
from rudder.rules import Heuristic, HeuristicConfig, make_decider


def metrics(**kw) -> Metrics:
    base = dict(
        trainer=0,
        minibatch=10,
        epoch=0,
        total_minibatches=1000,
        remote_inputs=100,
        local_inputs=300,
        hits=50,
        misses=50,
        extra_rows=0,
        rows_fetched=50,
        bytes_fetched=200,
        hit_pct=50.0,
        hit_pct_window=50.0,
        hit_pct_cumulative=40.0,
        rows_fetched_window=50.0,
        replaced=0,
        last_replaced=10,
        last_replaced_pct=10.0,
        since_replacement=3,
        replacements=2,
        buffer_capacity=100,
        buffer_fill=100,
        stale_slots=20,
    )
    base.update(kw)
    return Metrics(**base)


@pytest.mark.parametrize(
    ("spec", "first", "at_9", "at_10"),
    [
        ("always", True, True, True),
        ("never", False, False, False),
        ("every:5", False, True, False),  # minibatch 9's metrics decide minibatch 10
    ],
)
def test_rule_deciders(spec, first, at_9, at_10):
    d = make_decider(spec)
    assert bool(d.first()) is first
    assert bool(d.decide(metrics(minibatch=9))) is at_9
    assert bool(d.decide(metrics(minibatch=10))) is at_10
    assert d.spec == spec


@pytest.mark.parametrize("spec", ["every", "every:0", "every:x", "sometimes", "never:3"])
def test_bad_specs_are_explained(spec):
    with pytest.raises(ValueError, match=r"every:P|unknown decider"):
        make_decider(spec)


def test_heuristic_fills_an_empty_buffer_first():
    h = Heuristic()
    assert h.first() is Decision.REPLACE
    assert h.decide(metrics(buffer_fill=10, stale_slots=90)) is Decision.REPLACE


def test_heuristic_skips_with_nothing_stale_or_near_the_end():
    h = Heuristic()
    assert h.decide(metrics(stale_slots=0)) is Decision.SKIP
    assert h.decide(metrics(minibatch=995, stale_slots=90)) is Decision.SKIP


def test_heuristic_backs_off_after_rounds_that_did_not_help():
    h = Heuristic(HeuristicConfig(eval_lag=1, max_interval=8))
    intervals = []
    mb = 10
    for _ in range(5):
        h.decide(metrics(minibatch=mb, since_replacement=0, hit_pct=50.0))  # a round ran
        h.decide(metrics(minibatch=mb + 1, since_replacement=1, hit_pct=50.0))  # no gain
        intervals.append(h.interval)
        mb += 10
    assert intervals == [2, 4, 8, 8, 8]
    # A round that raised %-hits halves the interval again.
    h.decide(metrics(minibatch=mb, since_replacement=0, hit_pct=50.0))
    h.decide(metrics(minibatch=mb + 1, since_replacement=1, hit_pct=55.0))
    assert h.interval == 4


def test_heuristic_replaces_when_hits_slide_from_their_peak():
    h = Heuristic(HeuristicConfig(drop_pct=3.0, max_interval=32))
    h.interval = 32
    assert h.decide(metrics(since_replacement=1, hit_pct_window=60.0)) is Decision.SKIP
    assert h.decide(metrics(since_replacement=2, hit_pct_window=56.0)) is Decision.REPLACE


def test_metrics_round_trip_and_reject_unknown_fields():
    m = metrics()
    assert Metrics.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError, match="unknown metrics fields"):
        Metrics.from_dict({**m.to_dict(), "surprise": 1})
    assert dataclasses.replace(m, minibatch=999).remaining_minibatches == 0
