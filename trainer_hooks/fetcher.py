"""Moves a minibatch's feature rows: buffer hits plus one pull, around the minibatch hook.

It never imports DistDGL: ``pull(ids) -> rows`` is DistDGL's ``DistTensor`` indexing in a
trainer and a plain tensor in tests, and remote means "outside the partition's own id range"
(DistDGL relabels nodes so each partition owns one contiguous range). The contract, tested
for every policy: ``fetch(ids).x`` equals ``pull(ids)`` bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rudder.protocol import Metrics
from rudder.trainer_hooks.hook import MinibatchHook
from rudder.trainer_hooks.policies.base import Plan

Pull = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Fetched:
    """One minibatch's features and what it took to get them."""

    x: torch.Tensor  # [n_inputs, feat_dim], in input order
    plan: Plan
    remote_ids: np.ndarray  # the remote input ids, in input order (what traces record)
    n_local: int
    pull_s: float  # inside pull()
    hook_s: float  # everything else: lookup, policy, assembly, buffer writes, accounting
    metrics: Metrics


class BufferedFetcher:
    """Serves remote rows from the hook's buffer and pulls the rest in one request."""

    def __init__(self, hook: MinibatchHook, pull: Pull, owned: tuple[int, int]):
        self.hook = hook
        self.policy = hook.policy
        self.pull = pull
        self.lo, self.hi = owned

    def prefill(self) -> Plan | None:
        """Pull the policy's prefill rows (if any) into the buffer before training."""
        plan = self.hook.prefill()
        if plan is not None and plan.n_fetched:
            rows = self.pull(torch.from_numpy(plan.fetch_ids))
            self.policy.commit(plan, rows.numpy())
        return plan

    def fetch(
        self,
        input_nodes: torch.Tensor,
        *,
        epoch: int = 0,
        sample_s: float = 0.0,
        compute_s: float = 0.0,
        phase: int = 0,
    ) -> Fetched:
        """The rows of ``input_nodes`` (in input order), with the minibatch accounted."""
        t0 = time.perf_counter()
        remote_mask = (input_nodes < self.lo) | (input_nodes >= self.hi)
        remote_pos = remote_mask.nonzero().squeeze(1)
        remote_ids = input_nodes[remote_pos].numpy()
        plan = self.hook.plan(remote_ids)
        n_local = int(input_nodes.shape[0] - remote_pos.shape[0])

        ids = input_nodes
        hit_pos = None
        if plan.n_hits:
            # Ask for an owned row (a cheap shared-memory read) in place of each hit, so the
            # pull returns rows already in input order; then overwrite only the hit rows.
            # Measured: cheaper than pulling the non-hits and scattering them into place.
            hit_pos = remote_pos[torch.from_numpy(plan.hits)]
            ids = ids.clone()
            ids[hit_pos] = self.lo
        if plan.n_extra:
            ids = torch.cat([ids, torch.from_numpy(plan.fetch_ids[plan.n_misses :])])
        t1 = time.perf_counter()
        rows = self.pull(ids)
        pull_s = time.perf_counter() - t1
        n = input_nodes.shape[0]
        x = rows[:n] if plan.n_extra else rows
        if hit_pos is not None:
            x[hit_pos] = torch.from_numpy(self.policy.buffer.read(plan.slots[plan.hits]))
        extra = rows[n:] if plan.n_extra else None

        if plan.n_admitted:
            miss_pos = remote_pos[torch.from_numpy(~plan.hits)] if plan.n_hits else remote_pos
            self.policy.commit_admitted(plan, _admitted_rows(plan, x, miss_pos, extra))
        metrics = self.hook.record(
            plan,
            remote_ids,
            epoch=epoch,
            local_inputs=n_local,
            sample_s=sample_s,
            fetch_s=pull_s,
            compute_s=compute_s,
            phase=phase,
        )
        hook_s = time.perf_counter() - t0 - pull_s
        return Fetched(x, plan, remote_ids, n_local, pull_s, hook_s, metrics)


def _admitted_rows(
    plan: Plan, x: torch.Tensor, miss_pos: torch.Tensor, extra: torch.Tensor | None
) -> np.ndarray:
    """The rows of the admitted ids, gathered from where the pull put them."""
    src = plan.admit_src
    from_miss = src < plan.n_misses
    out = np.empty((src.shape[0], x.shape[1]), dtype=x.numpy().dtype)
    if from_miss.any():
        out[from_miss] = x[miss_pos[torch.from_numpy(src[from_miss])]].numpy()
    if not from_miss.all():
        out[~from_miss] = extra[torch.from_numpy(src[~from_miss] - plan.n_misses)].numpy()
    return out
