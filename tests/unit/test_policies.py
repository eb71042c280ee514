"""Contracts every policy keeps, checked over random Zipf-like traces."""

import numpy as np
import pytest
from conftest import feature_rows, make_trace, random_batches

from rudder.trainer_hooks.policies import POLICY_NAMES, PolicyContext, PolicySpec, make_policy
from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES
from rudder.trainer_hooks.replay import context_for

ONLINE = [p for p in POLICY_NAMES if p not in OFFLINE_POLICIES]


def _context(trace):
    return context_for(trace, [PolicySpec(name) for name in OFFLINE_POLICIES])


def _drive(policy, trace, decisions, dim=4):
    """Run the policy like the trainer-side adapter does, checking every served row."""
    pre = policy.prefill()
    if pre is not None:
        policy.commit(pre, feature_rows(pre.fetch_ids, dim))
    rows_before = policy.buffer.rows
    for t, ids in enumerate(trace):
        plan = policy.step(ids, replace=bool(decisions[t]))
        hit = plan.hits
        # Hits are read before the commit, as the adapter does.
        served = policy.buffer.read(plan.slots[hit])
        np.testing.assert_array_equal(served, feature_rows(ids[hit], dim))
        # The pull covers every miss exactly once, plus extra rows that are not requested.
        assert np.array_equal(plan.fetch_ids[: plan.n_misses], ids[~hit])
        assert np.unique(plan.fetch_ids).shape[0] == plan.n_fetched
        policy.commit(plan, feature_rows(plan.fetch_ids, dim))
        _check_invariants(policy)
    assert policy.buffer.rows is rows_before  # rows were written in place, never reallocated


def _check_invariants(policy):
    b = policy.buffer
    assert 0 <= b.size <= b.capacity
    held = b.ids[: b.size]
    assert np.unique(held).shape[0] == held.shape[0]
    assert np.all(b.ids[b.size :] == -1)
    assert np.array_equal(b.lookup(held), np.arange(b.size, dtype=np.int32))
    np.testing.assert_array_equal(b.rows[: b.size], feature_rows(held, b.feat_dim))


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("capacity", [0, 1, 7, 40])
def test_buffer_invariants_and_bit_identical_hits(name, capacity, rng):
    trace = make_trace(random_batches(rng, 30, universe=120, max_len=25))
    policy = make_policy(name, capacity, _context(trace), feat_dim=4)
    decisions = rng.random(trace.num_minibatches) < 0.5
    _drive(policy, trace, decisions)


@pytest.mark.parametrize("name", ONLINE)
def test_batches_larger_than_the_buffer(name, rng):
    # Demand caches refill a slot several times within one minibatch; only the last row lands.
    trace = make_trace(random_batches(rng, 10, universe=300, max_len=200))
    policy = make_policy(name, 16, _context(trace), feat_dim=4)
    _drive(policy, trace, np.ones(trace.num_minibatches, dtype=bool))


def test_unknown_policy_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of none, static"):
        make_policy("mru", 10)


@pytest.mark.parametrize("spec", ["periodic:0", "periodic:x", "lru:3"])
def test_bad_policy_arguments(spec):
    with pytest.raises(ValueError, match=r"periodic|takes no argument"):
        make_policy(spec, 10, PolicyContext(prefill_ranking=np.arange(5)))


def test_static_prefills_by_ranking_and_counts_the_rows():
    ranking = np.array([9, 3, 3, 7, 1], dtype=np.int64)
    policy = make_policy("static", 3, PolicyContext(prefill_ranking=ranking))
    plan = policy.prefill()
    assert plan.fetch_ids.tolist() == [9, 3, 7]  # ranking order, duplicates dropped
    assert plan.n_extra == 3 and plan.prefill
    assert sorted(policy.buffer.occupied_ids().tolist()) == [3, 7, 9]


def test_offline_policies_need_the_trace():
    with pytest.raises(ValueError, match="offline bound"):
        make_policy("belady", 4)
    with pytest.raises(ValueError, match="distinct id count"):
        make_policy("infinite", 4)
    with pytest.raises(ValueError, match="ranking"):
        make_policy("static", 4)


def test_smallest_k_is_exact_with_ties(rng):
    from rudder.trainer_hooks.selection import smallest_k

    for _ in range(200):
        n = int(rng.integers(0, 30))
        primary = rng.integers(0, 4, n).astype(float)
        tiebreak = rng.permutation(n)
        k = int(rng.integers(0, n + 2))
        expected = np.lexsort((tiebreak, primary))[:k]
        assert smallest_k(primary, tiebreak, k).tolist() == expected.tolist()


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_warm_up_runs_every_policy(name):
    from rudder.trainer_hooks.policies import warm_up

    warm_up(name, feat_dim=3)
