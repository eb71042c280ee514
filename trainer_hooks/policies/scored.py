"""The Rudder buffer policy: decay scoring, replacement rounds on the decider's word.

Every minibatch: look up the remote ids, credit the hit entries, count the misses. When the
decider says *replace*, a round runs: the stale slots (free slots first, then occupied slots
whose score fell below the threshold, lowest first) take the most-missed recent remote ids.
The replacement rows ride in the same pull as the minibatch's misses; a candidate that is
itself a miss of this minibatch costs no extra row. With no stale slot or no candidate the
round replaces nothing.

The baselines of the paper are this policy with a fixed decision rule (see ``registry``):
``fixed`` replaces every minibatch, ``periodic`` every P minibatches after a degree prefill
(MassiveGNN), ``static`` prefills and never replaces.
"""

from __future__ import annotations

from typing import ClassVar

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.candidates import MissTracker
from rudder.trainer_hooks.policies.base import Plan, Policy
from rudder.trainer_hooks.scoring import ScoringRule
from rudder.trainer_hooks.selection import smallest_k


@nb.njit(cache=True)
def _assign(table, ids, scores, stamps, size_cell, victims, new_ids, t, initial):
    """Put ``new_ids[k]`` into slot ``victims[k]``; returns how many valid entries it evicted."""
    evicted = 0
    for k in range(victims.shape[0]):
        s = victims[k]
        if s < size_cell[0]:
            idx.remove(table, ids, ids[s])
            evicted += 1
        else:
            size_cell[0] += 1  # victims past the fill level are the next free slots, in order
        ids[s] = new_ids[k]
        idx.insert(table, ids, new_ids[k], s)
        scores[s] = initial
        stamps[s] = t
    return evicted


class ScoredPolicy(Policy):
    """Decay-scored persistent buffer; replaces only when told to."""

    name: ClassVar[str] = "rudder"
    uses_decisions: ClassVar[bool] = True

    def __init__(
        self,
        buffer: PersistentBuffer,
        scoring: ScoringRule,
        candidates: MissTracker | None = None,
        prefill_ids: np.ndarray | None = None,
        fill_free: bool = True,
    ):
        super().__init__(buffer)
        self.scoring = scoring
        self.candidates = candidates if candidates is not None else MissTracker()
        self._prefill_ids = prefill_ids
        self.fill_free = fill_free

    def prefill(self) -> Plan | None:
        if self._prefill_ids is None or self.capacity == 0:
            return None
        # Keep the ranking order: the first `capacity` distinct ids.
        ranked = np.asarray(self._prefill_ids, dtype=np.int64)
        self._prefill_ids = None  # a prefill happens once, before the first minibatch
        _, first = np.unique(ranked, return_index=True)
        new_ids = ranked[np.sort(first)][: self.capacity]
        slots = np.arange(new_ids.shape[0], dtype=np.int32)
        b = self.buffer
        _assign(
            b.table,
            b.ids,
            b.scores,
            b.stamps,
            b.size_cell,
            slots,
            new_ids,
            -1,
            self.scoring.initial_score,
        )
        return Plan.prefill_of(new_ids, slots)

    def stale_count(self) -> int:
        b = self.buffer
        free = self.capacity - b.size
        # Metrics are reported after minibatch t-1 was stepped.
        return free + self.scoring.count_stale(b.scores, b.stamps, b.size, self.t - 1)

    def _victims(self, t: int, k: int) -> np.ndarray:
        """Up to ``k`` replaceable slots, best first: free slots, then stale by rising score."""
        b = self.buffer
        free = np.arange(b.size, min(self.capacity, b.size + k), dtype=np.int32)
        need = k - free.shape[0]
        if need <= 0:
            return free
        values = self.scoring.values(b.scores, b.stamps, b.size, t)
        stale = np.flatnonzero(values < self.scoring.threshold)
        stale = stale[smallest_k(values[stale], stale, need)]  # rising score, then slot
        return np.concatenate([free, stale.astype(np.int32)])

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        t, b = self.t, self.buffer
        slots = b.lookup(ids)
        self.scoring.on_hits(b.scores, b.stamps, slots, t)
        misses = ids[slots < 0]
        self.candidates.record(misses, t)
        free = self.capacity - b.size
        if replace and self.capacity > 0:
            new_ids = self.candidates.top(self.capacity, t)
            victims = self._victims(t, new_ids.shape[0])
        elif self.fill_free and free > 0:
            # Free slots take this minibatch's misses, whose rows are pulled anyway: no
            # decision needed, no eviction, no extra row.
            new_ids = self.candidates.top(self.capacity, t)
            new_ids = new_ids[np.isin(new_ids, misses, assume_unique=True)][:free]
            victims = np.arange(b.size, b.size + new_ids.shape[0], dtype=np.int32)
        else:
            return Plan.lookup_only(slots, misses)
        new_ids = new_ids[: victims.shape[0]]
        evicted = _assign(
            b.table,
            b.ids,
            b.scores,
            b.stamps,
            b.size_cell,
            victims,
            new_ids,
            t,
            self.scoring.initial_score,
        )
        self.candidates.forget(new_ids)

        # One pull: the misses, then the candidates that are not misses of this minibatch.
        in_misses = np.isin(new_ids, misses, assume_unique=True)
        extra = new_ids[~in_misses]
        fetch_ids = np.concatenate([misses, extra])
        src = np.empty(new_ids.shape[0], dtype=np.int64)
        src[~in_misses] = misses.shape[0] + np.arange(extra.shape[0])
        if in_misses.any():
            order = np.argsort(misses, kind="stable")
            src[in_misses] = order[np.searchsorted(misses, new_ids[in_misses], sorter=order)]
        return Plan(
            slots=slots,
            fetch_ids=fetch_ids,
            n_misses=int(misses.shape[0]),
            admit_slots=victims,
            admit_src=src,
            evicted=int(evicted),
            replaced=replace,
        )
