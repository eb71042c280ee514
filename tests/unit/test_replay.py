"""Replay in virtual time: latency, stale-request drop, and the baselines' identities."""

import numpy as np
import pytest
from conftest import make_trace, random_batches

from rudder.decisions import Decider, Decision
from rudder.trainer_hooks.channel import DecisionChannel
from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.policies.base import Plan
from rudder.trainer_hooks.replay import ReplayConfig, replay


class Recording(Decider):
    """Says replace, and remembers which minibatches' metrics it was asked about."""

    name = "recording"

    def __init__(self):
        self.seen = []

    def decide(self, metrics):
        self.seen.append(metrics.minibatch)
        return Decision.REPLACE


def _fresh_ids_trace(n=20):
    # Every minibatch brings new ids, so every replacement round admits something.
    return make_trace([np.arange(10 * i, 10 * i + 5) for i in range(n)], remote_node_count=200)


@pytest.mark.parametrize("latency", [1, 2, 3, 5])
def test_latency_applies_decisions_late_and_drops_stale_requests(latency):
    trace = _fresh_ids_trace()
    decider = Recording()
    rounds = []
    result = replay(
        trace,
        "rudder",
        ReplayConfig(buffer_fraction=1.0, latency=latency),
        on_metrics=lambda m: rounds.append(m.minibatch) if m.replaced else None,
        decider=decider,
    )
    n = trace.num_minibatches
    # Metrics of minibatch i are answered at i + latency; the requests in between are dropped,
    # and the next request carries the metrics of the minibatch where the answer landed.
    assert decider.seen == list(range(0, n, latency))
    assert result.dropped_requests == n - len(decider.seen)
    # first() said skip for minibatch 0; every landed answer then replaced.
    assert rounds == list(range(latency, n, latency))
    assert result.replacement_interval == pytest.approx(latency)


def test_channel_applies_nothing_between_answers():
    ch = DecisionChannel(Recording(), latency=3)
    acct = Accounting(trainer=0, capacity=10, row_bytes=4)
    empty = Plan.lookup_only(np.empty(0, np.int32), np.empty(0, np.int64))
    got = []
    for t in range(8):
        got.append(bool(ch.decision_for(t)))
        ch.offer(acct.record(empty))  # the metrics of minibatch t
    # Decider.first() skips minibatch 0; the metrics of 0 land at 3, those of 3 at 6.
    assert got == [False, False, False, True, False, False, True, False]
    assert ch.requests == 3 and ch.dropped == 5


def test_rudder_with_always_is_fixed(rng):
    trace = make_trace(random_batches(rng, 40, universe=200, max_len=40))
    cfg = ReplayConfig(buffer_fraction=0.2, decider="always")
    a = replay(trace, "rudder", cfg)
    b = replay(trace, "fixed", cfg)
    assert a.totals == b.totals
    assert (a.decider, b.decider) == ("always", "always")


def test_baselines_ignore_the_latency(rng):
    trace = make_trace(random_batches(rng, 30, universe=200, max_len=40))
    slow = replay(trace, "fixed", ReplayConfig(buffer_fraction=0.2, latency=7))
    fast = replay(trace, "fixed", ReplayConfig(buffer_fraction=0.2, latency=1))
    assert slow.totals == fast.totals and slow.latency == 1


def test_replacement_rows_are_communication(rng):
    trace = make_trace(random_batches(rng, 30, universe=200, max_len=40))
    cfg = ReplayConfig(buffer_fraction=0.2)
    t = replay(trace, "periodic:4", cfg).totals
    assert t.rows_fetched == t.misses + t.extra_rows + t.prefill_rows
    assert t.prefill_rows == trace.meta.capacity(0.2)
    assert t.misses + t.hits == t.remote_inputs


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("buffer_fraction", 1.5, "fraction"),
        ("latency", 0, "latency"),
        ("decider", "sometimes", "unknown decider"),
    ],
)
def test_bad_config_is_explained(field, value, message):
    kwargs = {"buffer_fraction": 0.1, field: value}
    with pytest.raises(ValueError, match=message):
        ReplayConfig(**kwargs)


class Timed:
    """A timed decider: always replace, taking `latency_s` (virtual) seconds."""

    spec = "timed"

    def __init__(self, latency_s):
        self.latency_s = latency_s
        self.seen = []

    def decide_timed(self, metrics):
        self.seen.append(metrics.minibatch)
        return Decision.REPLACE, self.latency_s


@pytest.mark.parametrize(("latency_s", "lands_after"), [(0.0, 1), (0.05, 2), (0.1, 2), (0.25, 4)])
def test_timed_answers_land_after_their_latency_in_trace_time(latency_s, lands_after):
    from rudder.trainer_hooks.channel import TimedChannel

    times = [0.1] * 20  # each minibatch takes 0.1 s
    decider = Timed(latency_s)
    ch = TimedChannel(decider, times)
    acct = Accounting(trainer=0, capacity=10, row_bytes=4)
    empty = Plan.lookup_only(np.empty(0, np.int32), np.empty(0, np.int64))
    landed = []
    for t in range(12):
        if ch.decision_for(t):
            landed.append(t)
        ch.offer(acct.record(empty))
    # A request after minibatch i is answered latency_s later; minibatch i+1 starts at once.
    assert landed[0] == decider.seen[0] + lands_after
    assert decider.seen == [0, *landed[:-1]] or decider.seen == [0, *landed]
    assert ch.dropped == 12 - len(decider.seen)
    assert ch.latencies_s == [latency_s] * len(decider.seen)


def test_replay_with_a_timed_decider_reports_its_latency(rng):
    trace = make_trace(random_batches(rng, 30, universe=200, max_len=40))
    r = replay(trace, "rudder", ReplayConfig(buffer_fraction=0.2), decider=Timed(0.0))
    assert r.latency_p50_s == 0.0 and r.latency is None
    assert r.decisions == 30  # instant answers: one per minibatch (first() included)


def test_an_agent_replayed_in_sync_mode_decides_every_minibatch_whatever_it_takes(rng):
    """``agent_sync``: a slow agent's answers land after ``latency`` minibatches, as if the
    trainer waited (rudder train --agent-mode sync), not after their time in the trace."""
    trace = make_trace(random_batches(rng, 30, universe=200, max_len=40))
    slow = Timed(latency_s=60.0)  # far longer than the whole trace
    timed = replay(trace, "rudder", ReplayConfig(buffer_fraction=0.2), decider=slow)
    assert timed.decisions < 3  # in trace time, a minute-long answer barely lands
    synced = replay(
        trace, "rudder", ReplayConfig(buffer_fraction=0.2, agent_sync=True), decider=Timed(60.0)
    )
    assert synced.decisions == 30 and synced.latency == 1
    assert synced.replace_decisions >= 29  # every answer (minibatch 0 has none yet)
    assert synced.totals.replacements > timed.totals.replacements
