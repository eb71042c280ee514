"""MinibatchHook: the one per-minibatch sequence, and the decider each policy runs with."""

import numpy as np
import pytest
from conftest import random_batches

from rudder.decisions import Decider, DeciderSpec, Decision
from rudder.trainer_hooks.channel import DecisionChannel
from rudder.trainer_hooks.hook import MinibatchHook, decider_for
from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.policies import PolicyContext, PolicySpec, ScoredOptions, make_policy
from rudder.trainer_hooks.trace import TraceRecorder

RANKING = np.arange(50, dtype=np.int64)


def _policy(spec, capacity=10):
    return make_policy(spec, capacity, PolicyContext(prefill_ranking=RANKING), feat_dim=4)


def _hook(spec="rudder", capacity=10, channel=None, **kw):
    policy = _policy(spec, capacity)
    return MinibatchHook(
        policy, Accounting(trainer=0, capacity=capacity, row_bytes=16), channel, **kw
    )


def _step(hook, ids, **kw):
    return hook.record(hook.plan(ids), ids, **kw)


class EvenReplace(Decider):
    """Replace after even minibatches; remembers which metrics it saw."""

    name = "even"

    def __init__(self):
        self.seen = []

    def decide(self, metrics):
        self.seen.append(metrics.minibatch)
        return Decision.REPLACE if metrics.minibatch % 2 == 0 else Decision.SKIP


class RecordingChannel:
    """A Channel that always says replace and keeps what it was offered."""

    def __init__(self):
        self.dropped = 0
        self.applied = []
        self.offered = []
        self.asked = []

    def decision_for(self, t):
        self.asked.append(t)
        self.applied.append((t, Decision.REPLACE))
        return Decision.REPLACE

    def offer(self, metrics):
        self.offered.append(metrics)

    def replacement_interval(self):
        return 1.0


# -- decider_for -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "user", "expected"),
    [
        ("static", "heuristic", "never"),
        ("fixed", "heuristic", "always"),
        ("fixed", "llm", "always"),
        ("periodic:5", "heuristic", "every:5"),
        ("periodic", "heuristic", "every:32"),
        ("rudder", "heuristic", "heuristic"),
        ("rudder", "llm", "llm"),
        ("rudder", "every:7", "every:7"),
        ("rudder", "classifier:m.pkl", "classifier:m.pkl"),
        ("lru", "heuristic", None),
        ("lfu", "heuristic", None),
        ("s3fifo", "llm", None),
        ("none", "heuristic", None),
    ],
)
def test_decider_for(policy, user, expected):
    spec = PolicySpec.parse(policy)
    got = decider_for(_policy(spec), spec, user)
    if expected is None:
        assert got is None
    else:
        assert isinstance(got, DeciderSpec) and str(got) == expected


def test_decider_for_takes_a_parsed_spec():
    spec = PolicySpec.parse("rudder")
    user = DeciderSpec.parse("every:3")
    assert decider_for(_policy(spec), spec, user) == user


def test_decider_for_rejects_a_bad_user_spec():
    spec = PolicySpec.parse("rudder")
    with pytest.raises(ValueError, match="unknown decider"):
        decider_for(_policy(spec), spec, "sometimes")


# -- plan and record ---------------------------------------------------------------------------


def test_plan_twice_without_record_raises():
    hook = _hook()
    ids = np.array([1, 2, 3], dtype=np.int64)
    plan = hook.plan(ids)
    with pytest.raises(RuntimeError, match="twice"):
        hook.plan(ids)
    m = hook.record(plan, ids)  # the pending plan can still be recorded
    assert m.minibatch == 0 and m.remote_inputs == 3
    hook.plan(ids)  # and then the next minibatch planned


def test_record_with_a_foreign_plan_raises():
    hook, other = _hook(), _hook()
    ids = np.array([4, 5], dtype=np.int64)
    foreign = other.plan(ids)
    with pytest.raises(RuntimeError, match="not the plan"):
        hook.record(foreign, ids)  # nothing planned here
    own = hook.plan(ids)
    with pytest.raises(RuntimeError, match="not the plan"):
        hook.record(foreign, ids)
    assert hook.t == 0
    assert hook.record(own, ids).minibatch == 0
    with pytest.raises(RuntimeError, match="not the plan"):
        hook.record(own, ids)  # the same plan twice
    assert hook.t == 1


def test_record_accounts_and_counts_minibatches(rng):
    hook = _hook("lru", capacity=8)
    batches = random_batches(rng, 15, universe=40, max_len=12)
    ms = [_step(hook, b, epoch=1, local_inputs=3, fetch_s=0.5) for b in batches]
    assert hook.t == 15
    assert [m.minibatch for m in ms] == list(range(15))
    assert all(m.epoch == 1 and m.local_inputs == 3 and m.fetch_s == 0.5 for m in ms)
    assert [m.remote_inputs for m in ms] == [len(b) for b in batches]
    tot = hook.accounting.totals
    assert tot.minibatches == 15 and tot.hits == sum(m.hits for m in ms) > 0
    assert all(m.buffer_fill <= 8 for m in ms)


def test_listeners_see_each_metrics(rng):
    seen_a, seen_b = [], []
    hook = _hook(listeners=[seen_a.append, seen_b.append])
    returned = [_step(hook, b) for b in random_batches(rng, 6, universe=30, max_len=8)]
    assert seen_a == returned and seen_b == returned
    assert all(a is r for a, r in zip(seen_a, returned, strict=True))


def test_the_channel_is_asked_and_offered_every_minibatch(rng):
    channel = RecordingChannel()
    hook = _hook(channel=channel)
    returned = [_step(hook, b) for b in random_batches(rng, 7, universe=30, max_len=8)]
    assert channel.asked == list(range(7))
    assert channel.offered == returned
    d = hook.decisions()
    assert d["decisions"] == 7 and d["replace_decisions"] == 7
    assert d["dropped_requests"] == 0 and d["replacement_interval"] == 1.0


def test_the_recorder_gets_each_minibatch():
    recorder = TraceRecorder()
    hook = _hook(recorder=recorder)
    batches = [np.array([3, 1, 2], dtype=np.int64), np.array([], dtype=np.int64)]
    for e, b in enumerate(batches):
        _step(hook, b, epoch=e, local_inputs=4 + e, sample_s=0.25, fetch_s=0.5)
    assert [b.tolist() for b in recorder.batches] == [[3, 1, 2], []]
    assert recorder.local_counts == [4, 5] and recorder.epochs == [0, 1]
    assert recorder.sample_s == [0.25, 0.25] and recorder.fetch_s == [0.5, 0.5]


def test_decisions_count_with_latency():
    decider = EvenReplace()
    channel = DecisionChannel(decider, latency=3)
    hook = _hook(capacity=20, channel=channel)
    for t in range(10):
        _step(hook, np.arange(5 * t, 5 * t + 5, dtype=np.int64))
    # Requests at 0, 3, 6, 9; answers land at 3, 6, 9 (first() at 0); the rest are dropped.
    assert decider.seen == [0, 3, 6, 9]
    d = hook.decisions()
    assert d["decisions"] == 4  # first() at 0, then 3, 6, 9
    assert d["replace_decisions"] == 2  # skip (first), replace (m0), skip (m3), replace (m6)
    assert d["dropped_requests"] == 6
    assert d["replacement_interval"] == pytest.approx(3.0)


def test_decisions_reach_the_policy():
    # Without fill_free, rows enter the buffer only in rounds, and a round runs only on a
    # replace decision: first() skips at 0, then minibatch t follows the answer to t - 1.
    policy = make_policy("rudder", 100, PolicyContext(), options=ScoredOptions(fill_free=False))
    channel = DecisionChannel(EvenReplace(), latency=1)
    hook = MinibatchHook(policy, Accounting(trainer=0, capacity=100, row_bytes=16), channel)
    ms = [_step(hook, np.arange(5 * t, 5 * t + 5, dtype=np.int64)) for t in range(6)]
    assert [m.minibatch for m in ms if m.replaced] == [1, 3, 5]
    assert [m.buffer_fill for m in ms] == [0, 5, 5, 10, 10, 15]
    assert hook.decisions()["replace_decisions"] == 3


def test_no_channel_means_no_decisions(rng):
    hook = _hook("lru")
    for b in random_batches(rng, 4, universe=30, max_len=8):
        m = _step(hook, b)
        assert m.stale_slots == 0
    assert hook.decisions() == {
        "decisions": 0,
        "replace_decisions": 0,
        "dropped_requests": 0,
        "replacement_interval": 0.0,
    }


def test_prefill_is_accounted():
    hook = _hook("static", capacity=10)
    plan = hook.prefill()
    assert plan is not None and plan.n_fetched == 10
    assert hook.accounting.totals.prefill_rows == 10
    assert hook.accounting.totals.rows_fetched == 10
    rudder = _hook("rudder")
    assert rudder.prefill() is None  # rudder starts empty
    assert rudder.accounting.totals.rows_fetched == 0
