"""The trainer-side adapter returns exactly what a plain pull returns, for every policy."""

import numpy as np
import pytest
import torch
from conftest import random_batches

from rudder.decisions import Decider, Decision
from rudder.trainer_hooks.channel import DecisionChannel
from rudder.trainer_hooks.fetcher import BufferedFetcher
from rudder.trainer_hooks.hook import MinibatchHook
from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.policies import POLICY_NAMES, PolicyContext, make_policy
from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES

ONLINE = [p for p in POLICY_NAMES if p not in OFFLINE_POLICIES]
N, LO, HI, F = 400, 100, 250, 8


@pytest.fixture(scope="module")
def store():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, F, generator=g)


def _minibatches(rng, n=25):
    # Input nodes: some local (LO..HI), some remote, in a scrambled order like DGL's blocks.
    out = []
    for remote in random_batches(rng, n, universe=N - (HI - LO), max_len=60):
        remote = np.where(remote < LO, remote, remote + (HI - LO))
        local = rng.choice(np.arange(LO, HI), size=int(rng.integers(0, 40)), replace=False)
        ids = rng.permutation(np.concatenate([remote, local]))
        out.append(torch.from_numpy(ids.astype(np.int64)))
    return out


class EveryThird(Decider):
    name = "every-third"

    def first(self):
        return Decision.REPLACE

    def decide(self, metrics):
        return Decision.REPLACE if (metrics.minibatch + 1) % 3 == 0 else Decision.SKIP


@pytest.mark.parametrize("name", ONLINE)
@pytest.mark.parametrize("capacity", [0, 10, 80])
def test_fetch_equals_plain_pull(name, capacity, store, rng):
    pulls = []

    def pull(ids):
        pulls.append(ids.clone())
        return store[ids]

    ranking = np.concatenate([np.arange(LO), np.arange(HI, N)])
    policy = make_policy(name, capacity, PolicyContext(prefill_ranking=ranking), feat_dim=F)
    channel = DecisionChannel(EveryThird(), latency=1) if policy.uses_decisions else None
    hook = MinibatchHook(policy, Accounting(trainer=0, capacity=capacity, row_bytes=4 * F), channel)
    fetcher = BufferedFetcher(hook, pull, (LO, HI))
    fetcher.prefill()
    hits = 0
    for t, ids in enumerate(_minibatches(rng)):
        pulls.clear()
        got = fetcher.fetch(ids)
        assert got.metrics.minibatch == t and got.metrics.hits == got.plan.n_hits
        assert torch.equal(got.x, store[ids])
        assert len(pulls) == 1  # one pull per minibatch
        remote = (ids < LO) | (ids >= HI)
        assert np.array_equal(got.remote_ids, ids[remote].numpy())
        assert got.n_local == int((~remote).sum())
        # One row per input (hits swapped for an owned row) plus the extra rows; a hit's own
        # remote row is never requested.
        assert pulls[0].shape[0] == ids.shape[0] + got.plan.n_extra
        hit_ids = got.remote_ids[got.plan.hits]
        assert not np.isin(hit_ids, pulls[0].numpy()).any()
        hits += got.plan.n_hits
    if capacity and name != "none":
        assert hits > 0
