"""Offline bounds: Belady's MIN with bypass is the fewest rows any buffer can fetch (checked by
brute force); best-static keeps the most requested ids; infinite fetches each id once."""

import itertools

import numpy as np
import pytest
from conftest import make_trace, random_batches
from hypothesis import given, settings
from hypothesis import strategies as st

from rudder.trainer_hooks.policies import POLICY_NAMES, PolicySpec
from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay


def brute_force_min_fetches(batches, capacity, universe):
    """Exhaustive search over buffer contents, prefetching of any row allowed.

    Before minibatch t the buffer holds S; the minibatch pulls its misses, may pull any other
    rows too, and leaves any S' of at most `capacity` ids among what is now on hand.
    """
    states = [
        frozenset(c)
        for k in range(capacity + 1)
        for c in itertools.combinations(range(universe), k)
    ]
    best = {frozenset(): 0}
    for batch in batches:
        batch = frozenset(int(x) for x in batch)
        nxt = {}
        for s, cost in best.items():
            misses = len(batch - s)
            for s2 in states:
                extra = len(s2 - s - batch)  # prefetched rows
                c = cost + misses + extra
                if c < nxt.get(s2, 1 << 60):
                    nxt[s2] = c
        best = nxt
    return min(best.values())


def _rows(trace, name, fraction, **cfg):
    config = ReplayConfig(buffer_fraction=fraction, **cfg)
    return replay(trace, name, config, context_for(trace, [PolicySpec.parse(name)])).totals


batch_lists = st.lists(
    st.lists(st.integers(0, 5), max_size=4, unique=True).map(sorted), min_size=1, max_size=7
)


@settings(max_examples=150, deadline=None)
@given(batches=batch_lists, capacity=st.integers(0, 3))
def test_belady_equals_brute_force(batches, capacity):
    trace = make_trace(batches, remote_node_count=6)
    fraction = capacity / 6
    assert trace.meta.capacity(fraction) == capacity
    assert _rows(trace, "belady", fraction).rows_fetched == brute_force_min_fetches(
        batches, capacity, 6
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_no_policy_fetches_fewer_rows_than_belady(seed, fraction):
    rng = np.random.default_rng(seed)
    trace = make_trace(random_batches(rng, 40, universe=150, max_len=40))
    bound = _rows(trace, "belady", fraction).rows_fetched
    for name in POLICY_NAMES:
        if name == "infinite":  # unbounded capacity: below belady by design
            continue
        for decider in ("always", "heuristic", "every:3"):
            t = _rows(trace, name, fraction, decider=decider, latency=int(rng.integers(1, 4)))
            assert t.rows_fetched >= bound, (name, decider)


def test_infinite_fetches_each_distinct_id_once(rng):
    trace = make_trace(random_batches(rng, 30, universe=80, max_len=30))
    t = _rows(trace, "infinite", 0.1)
    assert t.rows_fetched == trace.distinct_ids()
    assert t.hits == trace.ids.shape[0] - trace.distinct_ids()


def test_none_never_hits(rng):
    trace = make_trace(random_batches(rng, 10, universe=50, max_len=20))
    t = _rows(trace, "none", 0.5)
    assert t.hits == 0 and t.rows_fetched == trace.ids.shape[0]


@pytest.mark.parametrize("fraction", [0.05, 0.3, 1.0])
def test_best_static_keeps_the_most_requested_ids_from_their_first_request(rng, fraction):
    trace = make_trace(random_batches(rng, 30, universe=120, max_len=40))
    capacity = trace.meta.capacity(fraction)
    _, counts = np.unique(trace.ids, return_counts=True)
    kept = np.sort(counts)[::-1][:capacity]
    t = _rows(trace, "best-static", fraction)
    # each kept id misses once (its first request), then always hits; the rest always miss
    assert t.hits == int(kept.sum()) - kept.shape[0]
    assert t.rows_fetched == trace.ids.shape[0] - t.hits and t.evicted == 0
