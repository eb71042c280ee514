"""Demand-fill caches: every miss is admitted, a victim is evicted per admission.

The classic baselines. They pull exactly the misses (admission rides on the pull) and ignore
the decider. One heap-ordered base serves both eviction orders: LRU evicts the slot touched
longest ago, LFU the least-hit slot (in-cache counts; ties go to the least recent).
"""

from __future__ import annotations

from typing import ClassVar

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.policies import heap as hp
from rudder.trainer_hooks.policies.base import Plan, Policy, demand_step


@nb.njit(cache=True)
def _heap_cache_step(
    table,
    ids,
    scores,
    stamps,
    size_cell,
    heap,
    pos,
    capacity,
    clock_cell,
    count_frequency,
    query,
    slots_out,
    admit_slots,
    admit_src,
):
    n = size_cell[0]
    clock = clock_cell[0]
    n_admit = 0
    n_miss = 0
    evicted = 0
    for k in range(query.shape[0]):
        key = query[k]
        clock += 1
        s = idx.find(table, ids, key)
        slots_out[k] = s
        if s >= 0:
            if count_frequency:
                scores[s] += 1.0
            stamps[s] = clock
            hp.sift_down(heap, pos, scores, stamps, n, pos[s])  # keys only grow on a hit
            continue
        miss = n_miss
        n_miss += 1
        if capacity == 0:
            continue
        if n < capacity:
            s = n
            n += 1
        else:
            s = heap[0]
            idx.remove(table, ids, ids[s])
            evicted += 1
        ids[s] = key
        idx.insert(table, ids, key, s)
        scores[s] = 1.0 if count_frequency else 0.0
        stamps[s] = clock
        if pos[s] < 0:
            hp.push(heap, pos, scores, stamps, n - 1, s)
        else:
            hp.update(heap, pos, scores, stamps, n, s)
        admit_slots[n_admit] = s
        admit_src[n_admit] = miss
        n_admit += 1
    size_cell[0] = n
    clock_cell[0] = clock
    return n_admit, evicted


class HeapCache(Policy):
    """Demand-fill cache evicting the smallest ``(score, stamp)`` slot."""

    count_frequency: ClassVar[bool]

    def __init__(self, buffer: PersistentBuffer):
        super().__init__(buffer)
        self._heap = np.zeros(buffer.capacity, dtype=np.int32)
        self._pos = np.full(buffer.capacity, -1, dtype=np.int32)
        self._clock = np.zeros(1, dtype=np.int64)

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        b = self.buffer
        return demand_step(
            b,
            ids,
            _heap_cache_step,
            b.table,
            b.ids,
            b.scores,
            b.stamps,
            b.size_cell,
            self._heap,
            self._pos,
            b.capacity,
            self._clock,
            self.count_frequency,
        )


class LRU(HeapCache):
    """Least recently used."""

    name: ClassVar[str] = "lru"
    count_frequency: ClassVar[bool] = False


class LFU(HeapCache):
    """Least frequently used (counts kept while buffered), least recent among equals."""

    name: ClassVar[str] = "lfu"
    count_frequency: ClassVar[bool] = True


class NoBuffer(Policy):
    """DistDGL as it is: every remote input is pulled, nothing persists."""

    name: ClassVar[str] = "none"

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        return Plan.lookup_only(np.full(ids.shape[0], -1, dtype=np.int32), ids)
