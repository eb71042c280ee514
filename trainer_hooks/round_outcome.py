"""What the recent replacement rounds really did: the realized half of the deciders' grounding.

:mod:`round_preview` says what a round *now* would do, judged by the past window: how often
the rows it would admit were missed, how much the rows it would evict were hit. Those figures
are selection-biased (rows are admitted because they were just missed) and blind to direction:
measured on the recorded DistDGL traces, the preview's net is negative under locality drift,
where rounds every minibatch are the best policy, and positive on stationary access, where
they cost rows. What a decider needs is the outcome of the rounds it already ran, the way ARC
keeps ghost lists of evicted keys: over the last ``span`` minibatches, how often the rows the
rounds put in were hit, and how often the rows they took out were missed again (each such
miss is a pull the round caused). Replayed on the same traces with a round every minibatch,
rounds under drift saw 1.4-25 hits per ghost miss (deciles), on shuffled access 0.9-2.2 (median
1.2; docs/agent.md, "The outcomes").

Cost per minibatch: O(requested ids x log(rows moved)) per round within the span (at most
``span`` rounds), nothing without one; memory O(rows those rounds moved). No DistDGL import.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """The replacement rounds of the last ``span`` minibatches, and what followed them.

    ``rows`` is 0 when no round ran in the span: then nothing was observed and the hits and
    misses are 0 too, which says "unknown", not "useless".
    """

    rounds: int = 0  # rounds in the span
    rows: int = 0  # rows they put in
    admit_hits: int = 0  # hits since on the rows they put in
    ghost_misses: int = 0  # misses since on the rows they took out


def _member_count(ids: np.ndarray, sorted_set: np.ndarray) -> int:
    """How many of ``ids`` are in ``sorted_set`` (unique, ascending)."""
    if not ids.shape[0] or not sorted_set.shape[0]:
        return 0
    pos = np.searchsorted(sorted_set, ids)
    pos[pos == sorted_set.shape[0]] = 0
    return int(np.count_nonzero(sorted_set[pos] == ids))


@dataclass(slots=True)
class _Round:
    t: int
    admitted: np.ndarray  # sorted, unique
    evicted: np.ndarray  # sorted, unique
    hits: int = 0
    ghost_misses: int = 0


class OutcomeTracker:
    """Follows the rows each replacement round moved, for ``span`` minibatches.

    Per minibatch: :meth:`observe` its lookup first, then :meth:`on_round` if a round ran at
    it (its rows serve hits from the next minibatch on). A row that two rounds of the span
    moved counts for both.
    """

    def __init__(self, span: int):
        if span < 1:
            raise ValueError(f"an outcome tracker needs span >= 1, got {span}")
        self.span = int(span)
        self._rounds: deque[_Round] = deque()

    def _expire(self, t: int) -> None:
        """The span now ends at minibatch ``t``: forget the rounds before it."""
        while self._rounds and self._rounds[0].t <= t - self.span:
            self._rounds.popleft()

    def observe(self, ids: np.ndarray, slots: np.ndarray, t: int) -> None:
        """Minibatch ``t``'s lookup: ``ids`` requested, ``slots`` -1 where they missed."""
        self._expire(t)
        if not self._rounds:
            return
        hit = slots >= 0
        hits, misses = ids[hit], ids[~hit]
        for r in self._rounds:
            r.hits += _member_count(hits, r.admitted)
            r.ghost_misses += _member_count(misses, r.evicted)

    def on_round(self, admitted: np.ndarray, evicted: np.ndarray, t: int) -> None:
        """A round at minibatch ``t`` put ``admitted`` ids in and took ``evicted`` ids out."""
        self._rounds.append(
            _Round(t, np.unique(np.asarray(admitted)), np.unique(np.asarray(evicted)))
        )

    def outcome(self, t: int) -> RoundOutcome:
        """The rounds of the ``span`` minibatches up to ``t`` (the latest one observed)."""
        self._expire(t)
        return RoundOutcome(
            rounds=len(self._rounds),
            rows=sum(r.admitted.shape[0] for r in self._rounds),
            admit_hits=sum(r.hits for r in self._rounds),
            ghost_misses=sum(r.ghost_misses for r in self._rounds),
        )
