"""Both scoring rules against sequences worked out by hand."""

import numpy as np
import pytest

from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.candidates import MissTracker
from rudder.trainer_hooks.policies.scored import ScoredPolicy
from rudder.trainer_hooks.scoring import Additive, Multiplicative, make_scoring


def _policy(rule, capacity=2, window=1, fill_free=False, admission=False, decay=1.0):
    # Rounds alone unless a test asks for admission (tested at the end of this file).
    return ScoredPolicy(
        PersistentBuffer(capacity),
        rule,
        MissTracker(window=window, decay=decay),
        fill_free=fill_free,
        admission=admission,
    )


def _values_by_id(policy):
    b = policy.buffer
    vals = policy.scoring.values(b.scores, b.stamps, b.size, policy.t - 1)
    return {int(i): float(v) for i, v in zip(b.occupied_ids(), vals, strict=True)}


def _ids(*xs):
    return np.array(xs, dtype=np.int64)


def test_additive_sequence():
    rule = Additive.create(alpha=1.0, gamma=0.5, threshold=0.3, initial_score=1.0, max_score=2.5)
    p = _policy(rule)
    p.step(_ids(1, 2), replace=True)  # both admitted at score 1
    assert _values_by_id(p) == {1: 1.0, 2: 1.0}
    assert p.preview().stale_slots == 0  # idle at the next minibatch, both would be 0.5
    p.step(_ids(1))  # 1: 1 + 1 = 2; 2 idle: 0.5
    assert _values_by_id(p) == pytest.approx({1: 2.0, 2: 0.5})
    # The preview counts stale slots where a decision made now lands, the next minibatch:
    # 2, idle there too, falls to 0.25 < 0.3.
    assert p.preview().stale_slots == 1
    p.step(_ids(1))  # 1: min(3, 2.5); 2: 0.25 < 0.3, stale
    assert _values_by_id(p) == pytest.approx({1: 2.5, 2: 0.25})
    assert p.preview().stale_slots == 1  # 1 would be 1.25: fresh
    p.step(_ids())  # both idle
    assert _values_by_id(p) == pytest.approx({1: 1.25, 2: 0.125})
    p.step(_ids(2))  # a stale entry hit again recovers: 0.125 + 1 (no decay when hit)
    assert _values_by_id(p) == pytest.approx({1: 0.625, 2: 1.125})


def test_multiplicative_sequence_stale_after_more_than_period_idle():
    rule = Multiplicative.create(alpha=0.5, period=2)
    assert rule.threshold == 0.25
    p = _policy(rule)
    p.step(_ids(1, 2), replace=True)
    p.step(_ids(1))  # a hit undoes this minibatch's decay: 1 stays 1; 2 idle once: 0.5
    assert _values_by_id(p) == pytest.approx({1: 1.0, 2: 0.5})
    assert p.preview().stale_slots == 0  # next minibatch, idle: 2 exactly on the threshold
    p.step(_ids())  # 2 idle twice: exactly on the threshold, not stale
    assert _values_by_id(p) == pytest.approx({1: 0.5, 2: 0.25})
    assert p.preview().stale_slots == 1  # where a decision lands, 2 is idle a third time
    p.step(_ids())  # 2 idle three times (> period): stale; 1 idle twice: not yet
    assert _values_by_id(p) == pytest.approx({1: 0.25, 2: 0.125})
    assert p.preview().stale_slots == 2


def test_replacement_evicts_the_stale_and_admits_the_most_missed():
    rule = Additive.create(alpha=1.0, gamma=0.5, threshold=0.3, initial_score=1.0, max_score=4)
    p = _policy(rule)
    p.step(_ids(1, 2), replace=True)
    p.step(_ids(1, 3, 5))  # 1 hit (score 2); misses: 3, 5
    p.step(_ids(5))  # misses: 5 again
    plan = p.step(_ids(3, 5, 6), replace=True)  # 2 is stale (0.125), 1 is not (0.5)
    assert plan.replaced and plan.n_admitted == 1 and plan.evicted == 1
    assert sorted(p.buffer.occupied_ids().tolist()) == [1, 5]  # 5 missed 3 times, 3 twice
    assert plan.n_extra == 0  # the new row came with the minibatch's own misses
    assert p.buffer.lookup(_ids(5))[0] == plan.admit_slots[0]
    assert plan.fetch_ids[plan.admit_src[0]] == 5


def test_replacement_rows_outside_the_minibatch_cost_extra_fetches():
    rule = Additive.create(alpha=1.0, gamma=0.5, threshold=0.3, initial_score=1.0, max_score=4)
    p = _policy(rule, capacity=1, window=3)
    p.step(_ids(7), replace=True)
    p.step(_ids(8))
    p.step(_ids(8))
    plan = p.step(_ids(), replace=True)  # 7 idle 3 times: stale; 8 missed within the window
    assert plan.fetch_ids.tolist() == [8] and plan.n_misses == 0 and plan.n_extra == 1
    assert p.buffer.occupied_ids().tolist() == [8]


def test_no_stale_slot_means_no_replacement():
    p = _policy(Additive.create(gamma=0.9), capacity=1)
    p.step(_ids(1), replace=True)
    plan = p.step(_ids(2), replace=True)  # 1 is fresh: nothing to evict
    assert plan.n_admitted == 0 and p.buffer.occupied_ids().tolist() == [1]


def test_new_entries_start_bounded_whatever_their_miss_count():
    rule = Additive.create(initial_score=1.0, max_score=8.0)
    p = _policy(rule, capacity=1)
    for _ in range(50):
        p.step(_ids(9))  # 50 misses, no replacement
    p.step(_ids(9), replace=True)
    assert _values_by_id(p) == {9: 1.0}


def test_free_slots_take_this_minibatchs_misses_without_a_round():
    p = _policy(make_scoring("additive"), capacity=3, window=4, fill_free=True)
    p.step(_ids(1))
    plan = p.step(_ids(1, 2, 3))
    assert plan.n_hits == 1 and not plan.replaced and plan.n_extra == 0 and plan.evicted == 0
    assert sorted(p.buffer.occupied_ids().tolist()) == [1, 2, 3]
    plan = p.step(_ids(4, 5))  # full: nothing is evicted without a decision
    assert plan.n_admitted == 0 and sorted(p.buffer.occupied_ids().tolist()) == [1, 2, 3]


def test_a_fill_is_not_counted_as_a_replacement_round():
    from rudder.trainer_hooks.metrics import Accounting

    p = _policy(make_scoring("additive"), capacity=4, fill_free=True)
    acct = Accounting(trainer=0, capacity=4, row_bytes=4, total_minibatches=2)
    m = acct.record(p.step(_ids(1, 2)), epoch=0, local_inputs=0, buffer_fill=p.buffer.size)
    assert m.replaced == 0 and acct.totals.replacements == 0 and m.buffer_fill == 2
    assert m.rows_fetched == 2  # the fill rode in the misses' pull


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("additive", {"gamma": 1.5}, "decay"),
        ("additive", {"threshold": 2.0}, "threshold < initial_score"),
        ("multiplicative", {"period": 0}, "period"),
        ("multiplicative", {"alpha": 1.0}, "alpha"),
        ("lfu", {}, "unknown scoring rule"),
    ],
)
def test_bad_parameters_are_explained(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_scoring(name, **params)


def test_admission_swaps_in_a_miss_used_more_than_the_weakest_entry_without_a_round():
    # Long-run use decays by 0.5 a minibatch here, so the numbers stay small and exact.
    p = _policy(Additive.create(gamma=0.9), capacity=2, fill_free=True, admission=True, decay=0.5)
    p.step(_ids(1, 2))  # fill: 1 and 2 enter with use 1
    p.step(_ids(1))  # 1: 0.5 + 1 = 1.5; 2 idle
    plan = p.step(_ids(1, 3))  # 3 missed once: use 1; 2 is worth 0.25 -> 3 takes its slot
    assert not plan.replaced and plan.n_admitted == 1 and plan.evicted == 1
    assert plan.n_extra == 0  # 3's row is pulled as a miss anyway
    assert sorted(p.buffer.occupied_ids().tolist()) == [1, 3]
    plan = p.step(_ids(1, 4))  # 4 (use 1) does not beat 3 (0.5) by the 25% margin? it does
    assert sorted(p.buffer.occupied_ids().tolist()) == [1, 4]
    plan = p.step(_ids(1, 3))  # 3 comes back with its history: 0.5**2 + 1 = 1.25 > 4's 0.5
    assert sorted(p.buffer.occupied_ids().tolist()) == [1, 3]


def test_admission_never_evicts_an_entry_worth_more_than_the_miss():
    p = _policy(Additive.create(gamma=0.9), capacity=1, fill_free=True, admission=True, decay=0.9)
    for _ in range(5):
        p.step(_ids(1))  # 1 is used every minibatch
    for x in range(10, 20):
        plan = p.step(_ids(1, x))  # one-off misses never displace it
        assert plan.n_admitted == 0
    assert p.buffer.occupied_ids().tolist() == [1]


def test_the_baselines_do_not_admit_without_their_rule():
    from rudder.trainer_hooks.policies import PolicyContext, make_policy

    ctx = PolicyContext(prefill_ranking=_ids(1, 2))
    assert not make_policy("static", 2, ctx).admission
    assert not make_policy("fixed", 2, ctx).admission
    assert not make_policy("periodic", 2, ctx).admission
    assert make_policy("rudder", 2, ctx).admission
