"""The grounding a decider sees: the slot-sample preview against a brute-force recount."""

import numpy as np
import pytest

from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.candidates import MissTracker
from rudder.trainer_hooks.policies.scored import ScoredPolicy
from rudder.trainer_hooks.round_preview import SAMPLE_SLOTS, SlotSample
from rudder.trainer_hooks.scoring import Additive

SPAN = 4


def _drifting_batches(rng, steps, universe=3000, batch=300):
    """Batches from a window of ids that slides a little every minibatch (some drift)."""
    for t in range(steps):
        lo = 7 * t
        yield np.unique(rng.integers(lo, lo + universe // 3, batch)).astype(np.int64)


def _policy(capacity, admission):
    return ScoredPolicy(
        PersistentBuffer(capacity),
        Additive.create(),
        MissTracker(window=1, decay=0.99, span=SPAN),
        admission=admission,
    )


class _BruteForce:
    """Recounts the preview from the raw history: every slot, every id, no sampling."""

    def __init__(self):
        self.batches: list[np.ndarray] = []
        self.misses: list[np.ndarray] = []
        self.since: dict[int, int] = {}  # id -> minibatch it entered the buffer

    def step(self, policy, ids, t):
        before = set(policy.buffer.occupied_ids().tolist())
        buffered_at_lookup = np.isin(ids, list(before))
        policy.step(ids, replace=(t % 5 == 4))
        after = set(policy.buffer.occupied_ids().tolist())
        for x in after - before:
            self.since[x] = t
        for x in before & after:  # an entry evicted and admitted again in one round: rare
            self.since.setdefault(x, -1)
        self.batches.append(ids)
        self.misses.append(ids[~buffered_at_lookup])

    def expected(self, policy, t):
        b, rule = policy.buffer, policy.scoring
        vals = rule.values(b.scores, b.stamps, b.size, t + 1)  # stale where the round lands
        free = policy.capacity - b.size
        stale = np.flatnonzero(vals < rule.threshold)
        cands = policy.candidates.top(policy.capacity, t)
        swap = min(cands.shape[0], free + stale.shape[0])
        evict = max(0, swap - free)
        recent = range(max(0, t - SPAN + 1), t + 1)
        victims = stale[np.lexsort((stale, vals[stale]))][:evict]

        def hits(x):
            return sum(x in set(self.batches[u].tolist()) for u in recent if u > self.since[x])

        evict_use = float(np.mean([hits(int(b.ids[s])) for s in victims])) if evict else 0.0
        missed = [set(self.misses[u].tolist()) for u in recent]
        counts = [sum(int(x) in m for m in missed) for x in cands[:swap]]
        admit_use = float(np.mean(counts)) if swap else 0.0
        prev = set().union(*(self.misses[u].tolist() for u in range(max(0, t - SPAN + 1), t)))
        last = self.misses[t]
        repeats = sum(int(x) in prev for x in last)
        return free + stale.shape[0], swap, evict, evict_use, admit_use, repeats


@pytest.mark.parametrize("admission", [False, True])
def test_preview_equals_a_brute_force_recount_when_every_slot_is_sampled(admission):
    rng = np.random.default_rng(3)
    policy, brute = _policy(400, admission), _BruteForce()
    assert policy.sample.stride == 1
    rounds_with_evictions = 0
    for t, ids in enumerate(_drifting_batches(rng, 40)):
        brute.step(policy, ids, t)
        got = policy.preview()
        want = brute.expected(policy, t)
        assert (got.stale_slots, got.swap_rows, got.evict_rows) == want[:3], t
        assert got.evict_use == pytest.approx(want[3]), t
        assert got.admit_use == pytest.approx(want[4]), t
        assert got.repeat_misses == want[5], t
        rounds_with_evictions += got.evict_rows > 0
    assert rounds_with_evictions > 10  # the comparison covered evicting rounds


def test_a_large_buffer_is_previewed_from_a_bounded_sample():
    rng = np.random.default_rng(5)
    capacity = 3 * SAMPLE_SLOTS
    policy = _policy(capacity, admission=False)
    assert policy.sample.n <= SAMPLE_SLOTS and policy.sample.stride == 3
    for t in range(30):
        ids = np.unique(rng.integers(0, 5 * capacity, 4000)).astype(np.int64)
        policy.step(ids, replace=(t % 3 == 2))
    b, rule = policy.buffer, policy.scoring
    exact = (capacity - b.size) + rule.count_stale(b.scores, b.stamps, b.size, policy.t)
    got = policy.preview().stale_slots
    assert abs(got - exact) <= 0.03 * capacity


def test_hits_of_an_evicted_entry_do_not_count_for_its_successor():
    sample = SlotSample(capacity=4, span=2)
    sample.on_hits(np.array([0, 1, -1], dtype=np.int32), t=0)
    sample.on_assign(np.array([0], dtype=np.int32), t=0)  # slot 0 refilled after its hit
    assert sample.win_hits.tolist() == [0, 1, 0, 0]
    sample.on_hits(np.array([0], dtype=np.int32), t=1)
    sample.on_hits(np.array([], dtype=np.int32), t=2)  # t=0 leaves the span: only slot 1 drops
    assert sample.win_hits.tolist() == [1, 0, 0, 0]
    sample.on_hits(np.array([], dtype=np.int32), t=3)
    assert sample.win_hits.tolist() == [0, 0, 0, 0]


def test_span_counts_follow_the_last_span_minibatches():
    tracker = MissTracker(span=2)
    tracker.record(np.array([1, 2], dtype=np.int64), 0)
    assert tracker.repeats == 0
    tracker.record(np.array([2, 3], dtype=np.int64), 1)
    assert tracker.repeats == 1  # 2 was missed at 0
    assert tracker.span_counts(np.array([1, 2, 3, 9], dtype=np.int64)).tolist() == [1, 2, 1, 0]
    tracker.record(np.array([], dtype=np.int64), 2)  # minibatch 0 leaves the span
    assert tracker.span_counts(np.array([1, 2, 3], dtype=np.int64)).tolist() == [0, 1, 1]
