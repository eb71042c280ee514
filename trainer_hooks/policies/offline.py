"""Offline bounds: what any buffer of the same capacity could at best do on a trace.

``belady`` is Belady's MIN with bypass over minibatches: after each minibatch the buffer keeps
the ids whose next request comes soonest, admitting a miss only if it is requested again
before some buffered id (otherwise it bypasses). It fetches the fewest rows any policy of this
capacity can fetch on the trace; prefetching cannot do better, because any prefetch schedule can
be made lazy (fetch each row at its next request) without fetching more. It needs the future,
so it exists only in replay. ``infinite`` (registered as an unbounded LRU) fetches each distinct
id once.

``best-static`` keeps the ``capacity`` ids the whole trace requests most, each admitted at its
first request and never evicted: the best buffer that never changes, chosen in hindsight. When
minibatches are sampled independently (the usual case), requests follow the independent
reference model, under which keeping the most-requested ids is also the best an *online*
policy can do in expectation; what ``belady`` saves beyond it comes from knowing which ids the
next random minibatches will draw, which no policy can know.
"""

from __future__ import annotations

from typing import ClassVar

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.policies import heap as hp
from rudder.trainer_hooks.policies.base import Plan, Policy, demand_step

NEVER = np.int64(1) << 62  # "not requested again"


def next_use(offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For each position of the concatenated ids, the minibatch of that id's next request.

    ``offsets`` delimits minibatches (``ids[offsets[i]:offsets[i+1]]`` is minibatch ``i``).
    Positions whose id is never requested again get :data:`NEVER`.
    """
    batch = np.repeat(np.arange(offsets.shape[0] - 1, dtype=np.int64), np.diff(offsets))
    order = np.lexsort((batch, ids))
    sorted_ids = ids[order]
    nxt = np.full(ids.shape[0], NEVER, dtype=np.int64)
    same = sorted_ids[1:] == sorted_ids[:-1]
    nxt[order[:-1][same]] = batch[order[1:][same]]
    return nxt


@nb.njit(cache=True)
def _belady_step(
    table,
    ids,
    scores,
    stamps,
    size_cell,
    heap,
    pos,
    capacity,
    future,
    query,
    slots_out,
    admit_slots,
    admit_src,
):
    # Heap order: score = -next_use, so the root is the buffered id requested last.
    n = size_cell[0]
    for k in range(query.shape[0]):
        s = idx.find(table, ids, query[k])
        slots_out[k] = s
        if s >= 0:
            scores[s] = -np.float64(future[k])
            hp.update(heap, pos, scores, stamps, n, s)
    n_admit = 0
    n_miss = 0
    evicted = 0
    for k in range(query.shape[0]):
        if slots_out[k] >= 0:
            continue
        miss = n_miss
        n_miss += 1
        if capacity == 0 or future[k] >= NEVER:
            continue  # bypass: never requested again
        key = -np.float64(future[k])
        if n < capacity:
            s = n
            n += 1
        else:
            s = heap[0]
            if key <= scores[s]:
                continue  # bypass: every buffered id is requested no later than this one
            idx.remove(table, ids, ids[s])
            evicted += 1
        ids[s] = query[k]
        idx.insert(table, ids, query[k], s)
        scores[s] = key
        stamps[s] = 0
        if pos[s] < 0:
            hp.push(heap, pos, scores, stamps, n - 1, s)
        else:
            hp.update(heap, pos, scores, stamps, n, s)
        admit_slots[n_admit] = s
        admit_src[n_admit] = miss
        n_admit += 1
    size_cell[0] = n
    return n_admit, evicted


def by_popularity(ids: np.ndarray) -> np.ndarray:
    """The distinct ids of a trace, most requested first (ties: smaller id first)."""
    distinct, counts = np.unique(ids, return_counts=True)
    return distinct[np.lexsort((distinct, -counts))]


@nb.njit(cache=True)
def _best_static_step(table, ids, size_cell, keep, query, slots_out, admit_slots, admit_src):
    n = size_cell[0]
    n_admit = 0
    n_miss = 0
    for k in range(query.shape[0]):
        s = idx.find(table, ids, query[k])
        slots_out[k] = s
        if s >= 0:
            continue
        miss = n_miss
        n_miss += 1
        j = np.searchsorted(keep, query[k])
        if j < keep.shape[0] and keep[j] == query[k]:  # one of the kept ids: admit it for good
            ids[n] = query[k]
            idx.insert(table, ids, query[k], n)
            admit_slots[n_admit] = n
            admit_src[n_admit] = miss
            n_admit += 1
            n += 1
    size_cell[0] = n
    return n_admit, 0


class BestStatic(Policy):
    """The ``capacity`` most-requested ids of the trace, kept from their first request on."""

    name: ClassVar[str] = "best-static"

    def __init__(self, buffer: PersistentBuffer, popular: np.ndarray):
        super().__init__(buffer)
        self._keep = np.sort(np.asarray(popular[: buffer.capacity], dtype=np.int64))

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        b = self.buffer
        return demand_step(b, ids, _best_static_step, b.table, b.ids, b.size_cell, self._keep)


class Belady(Policy):
    """Belady's MIN with bypass; ``future`` comes from :func:`next_use` on the whole trace."""

    name: ClassVar[str] = "belady"

    def __init__(self, buffer: PersistentBuffer, future: np.ndarray):
        super().__init__(buffer)
        self._future = np.ascontiguousarray(future, dtype=np.int64)
        self._cursor = 0
        self._heap = np.zeros(buffer.capacity, dtype=np.int32)
        self._pos = np.full(buffer.capacity, -1, dtype=np.int32)

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        n = ids.shape[0]
        future = self._future[self._cursor : self._cursor + n]
        if future.shape[0] != n:
            raise ValueError("belady stepped past the end of the trace it was built for")
        self._cursor += n
        b = self.buffer
        return demand_step(
            b,
            ids,
            _belady_step,
            b.table,
            b.ids,
            b.scores,
            b.stamps,
            b.size_cell,
            self._heap,
            self._pos,
            b.capacity,
            future,
        )
