"""The Rudder buffer policy: decay scoring, replacement rounds on the decider's word.

Every minibatch: look up the remote ids, credit the hit entries, count the misses. When the
decider says *replace*, a round runs: the stale slots (free slots first, then occupied slots
whose score fell below the threshold, lowest first) take the most-missed recent remote ids.
The replacement rows ride in the same pull as the minibatch's misses; a candidate that is
itself a miss of this minibatch costs no extra row. With no stale slot or no candidate the
round replaces nothing.

Between rounds the buffer keeps itself in order without a decision (``admission``): a miss
whose long-run use (a slowly decaying access count, ``freq``) beats the weakest buffered
entry's by a margin takes that entry's slot. Its row is pulled anyway, so this costs no
extra row; a round is what follows a moving working set (recent use, ``scores``), admission
is what makes the buffer converge to the best fixed buffer when nothing moves.

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
from rudder.trainer_hooks.candidates import MissTracker, decayed
from rudder.trainer_hooks.policies.base import Plan, Policy
from rudder.trainer_hooks.round_outcome import OutcomeTracker, RoundOutcome
from rudder.trainer_hooks.round_preview import RoundPreview, SlotSample, preview
from rudder.trainer_hooks.scoring import ScoringRule
from rudder.trainer_hooks.selection import smallest_k

_POOL_REFRESH = 4  # minibatches between full scans for the weakest entries
_POOL_MIN, _POOL_SHARE = 1024, 8  # the pool holds max(1024, capacity / 8) slots


@nb.njit(cache=True)
def _credit(freq, stamps, slots, t, powers):
    """Long-run use of the slots hit at ``t`` (before ``stamps`` move to ``t``)."""
    for k in range(slots.shape[0]):
        s = slots[k]
        if s >= 0:
            freq[s] = decayed(freq[s], powers, t - stamps[s]) + 1.0


@nb.njit(cache=True)
def _use_at(freq, stamps, slots, t, powers, out):
    for k in range(slots.shape[0]):
        out[k] = decayed(freq[slots[k]], powers, t - stamps[slots[k]])


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
        admission: bool = False,
        admission_margin: float = 0.25,
    ):
        super().__init__(buffer)
        self.scoring = scoring
        self.candidates = candidates if candidates is not None else MissTracker()
        self._prefill_ids = prefill_ids
        self.fill_free = fill_free
        self.admission = admission
        self.margin = float(admission_margin)
        self._pool = np.empty(0, dtype=np.int32)  # the weakest slots (see _weak_pool)
        self._pool_t = 0
        self.sample = SlotSample(self.capacity, span=self.candidates.span)
        self.outcomes = OutcomeTracker(self.candidates.span)
        if self.margin < 0:
            raise ValueError(f"admission margin must be >= 0, got {admission_margin}")

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
        self.sample.on_assign(slots, -1)
        return Plan.prefill_of(new_ids, slots)

    def preview(self) -> RoundPreview:
        """The round a *replace* would run after the latest minibatch, from the slot sample."""
        b, t = self.buffer, self.t - 1  # metrics are reported after minibatch t was stepped
        pos = self.sample.occupied(b.size)
        # Stale as of the round's own minibatch, the next one, where the decision lands (an
        # entry a round just put in is fresh now, but may decay below the threshold by then).
        values = self.scoring.values_at(b.scores, b.stamps, self.sample.slots[pos], t + 1)
        cands = self.candidates.top(self.capacity, t)
        counts = self.candidates.span_counts(cands)
        return preview(
            self.sample, values, self.scoring.threshold, b.size, counts, self.candidates.repeats
        )

    def outcome(self) -> RoundOutcome:
        """What the rounds of the last span did since (hits on their rows, ghost misses)."""
        return self.outcomes.outcome(self.t - 1)

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

    def _weak_pool(self, t: int) -> np.ndarray:
        """The weakest slots by long-run use: a pool rescanned every few minibatches.

        Idle entries all decay at the same rate, so their order never changes; only hits and
        new entries move, and a rescan every ``_POOL_REFRESH`` minibatches catches those. So a
        minibatch costs O(pool), not O(capacity).
        """
        b = self.buffer
        if self._pool.shape[0] == 0 or t - self._pool_t >= _POOL_REFRESH:
            values = np.empty(b.size, dtype=np.float64)
            every = np.arange(b.size, dtype=np.int32)
            _use_at(b.freq, b.stamps, every, t, self.candidates.powers, values)
            size = min(b.size, max(_POOL_MIN, self.capacity // _POOL_SHARE))
            self._pool = every[smallest_k(values, every, size)]
            self._pool_t = t
        return self._pool

    def _admit(self, misses: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Misses whose long-run use beats the weakest entries', paired with those slots."""
        none = (np.empty(0, np.int64), np.empty(0, np.int32))
        if not misses.shape[0]:
            return none
        pool = self._weak_pool(t)
        pool_vals = np.empty(pool.shape[0], dtype=np.float64)
        _use_at(self.buffer.freq, self.buffer.stamps, pool, t, self.candidates.powers, pool_vals)
        cand_vals = self.candidates.values(misses, t)
        good = cand_vals > pool_vals.min(initial=np.inf) * (1.0 + self.margin)
        if not good.any():
            return none
        cand, cand_vals = misses[good], cand_vals[good]
        k = min(cand.shape[0], pool.shape[0])
        pick = smallest_k(-cand_vals, cand, k)  # most used first
        cand, cand_vals = cand[pick], cand_vals[pick]
        pick = smallest_k(pool_vals, pool, k)  # least used first
        victims, victim_vals = pool[pick], pool_vals[pick]
        better = cand_vals > victim_vals * (1.0 + self.margin)
        n = k if better.all() else int(np.argmin(better))  # pairs stay better up to here
        return cand[:n], victims[:n]

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        t, b = self.t, self.buffer
        slots = b.lookup(ids)
        self.sample.on_hits(slots, t)
        self.outcomes.observe(ids, slots, t)
        _credit(b.freq, b.stamps, slots, t, self.candidates.powers)
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
        elif self.admission and free == 0:
            new_ids, victims = self._admit(misses, t)
            if not new_ids.shape[0]:
                return Plan.lookup_only(slots, misses)
        else:
            return Plan.lookup_only(slots, misses)
        new_ids = new_ids[: victims.shape[0]]
        victims = victims[: new_ids.shape[0]]
        # Long-run use moves with the id: evicted entries hand theirs back to the tracker,
        # admitted ones take theirs along.
        gone = victims[victims < b.size]
        gone_ids = b.ids[gone].copy()
        kept = np.empty(gone.shape[0], dtype=np.float64)
        _use_at(b.freq, b.stamps, gone, t, self.candidates.powers, kept)
        self.candidates.restore(gone_ids, kept, t)
        if replace:
            self.outcomes.on_round(new_ids, gone_ids, t)
        carried = self.candidates.take(new_ids, t)
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
        self.sample.on_assign(victims, t)
        b.freq[victims] = carried

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
