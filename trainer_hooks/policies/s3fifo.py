"""S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO, a main FIFO, a ghost FIFO.

New ids enter the small queue (10% of capacity). Leaving it, an id hit at least once moves to
main; otherwise it is evicted and remembered in the ghost queue, and a ghost that misses again
goes straight to main. Main is a FIFO with reinsertion: an id with hits left is put back with
one hit fewer. Hits only bump a 2-bit counter, so hot ids cost no reordering.
"""

from __future__ import annotations

from typing import ClassVar

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.policies.base import Plan, Policy, demand_step

_MAX_FREQ = 3.0


@nb.njit(cache=True)
def _ring_push(ring, state, q, value):
    # state[q] = (head, count) of queue q; ring[q] holds its items.
    cap = ring.shape[1]
    ring[q, (state[q, 0] + state[q, 1]) % cap] = value
    state[q, 1] += 1


@nb.njit(cache=True)
def _ring_pop(ring, state, q):
    cap = ring.shape[1]
    value = ring[q, state[q, 0]]
    state[q, 0] = (state[q, 0] + 1) % cap
    state[q, 1] -= 1
    return value


@nb.njit(cache=True)
def _ghost_add(gtable, gkeys, gstate, key):
    cap = gkeys.shape[0]
    if gstate[1] == cap:
        head = gstate[0]
        old = gkeys[head]
        # The oldest ghost may have been re-admitted (and unmapped) meanwhile.
        if idx.find(gtable, gkeys, old) == head:
            idx.remove(gtable, gkeys, old)
        gstate[0] = (head + 1) % cap
        gstate[1] -= 1
    p = (gstate[0] + gstate[1]) % cap
    gkeys[p] = key
    idx.insert(gtable, gkeys, key, p)
    gstate[1] += 1


@nb.njit(cache=True)
def _evict_one(table, ids, freq, slot_ring, slot_state, small_target, gtable, gkeys, gstate):
    """Free one slot; returns it. Queue 0 is small, queue 1 is main."""
    while True:
        if slot_state[0, 1] >= small_target or slot_state[1, 1] == 0:
            s = _ring_pop(slot_ring, slot_state, 0)
            if freq[s] > 0.0:
                freq[s] = 0.0
                _ring_push(slot_ring, slot_state, 1, s)
                continue
            if gkeys.shape[0] > 0:
                _ghost_add(gtable, gkeys, gstate, ids[s])
        else:
            s = _ring_pop(slot_ring, slot_state, 1)
            if freq[s] > 0.0:
                freq[s] -= 1.0
                _ring_push(slot_ring, slot_state, 1, s)
                continue
        idx.remove(table, ids, ids[s])
        return s


@nb.njit(cache=True)
def _s3fifo_step(
    table,
    ids,
    freq,
    size_cell,
    slot_ring,
    slot_state,
    small_target,
    gtable,
    gkeys,
    gstate,
    capacity,
    query,
    slots_out,
    admit_slots,
    admit_src,
):
    n = size_cell[0]
    n_admit = 0
    n_miss = 0
    evicted = 0
    for k in range(query.shape[0]):
        key = query[k]
        s = idx.find(table, ids, key)
        slots_out[k] = s
        if s >= 0:
            if freq[s] < _MAX_FREQ:
                freq[s] += 1.0
            continue
        miss = n_miss
        n_miss += 1
        if capacity == 0:
            continue
        # Look the ghost up before evicting: the eviction may push this very id out of it.
        was_ghost = gkeys.shape[0] > 0 and idx.find(gtable, gkeys, key) >= 0
        if was_ghost:
            idx.remove(gtable, gkeys, key)
        if n < capacity:
            s = n
            n += 1
        else:
            s = _evict_one(
                table, ids, freq, slot_ring, slot_state, small_target, gtable, gkeys, gstate
            )
            evicted += 1
        if was_ghost:
            _ring_push(slot_ring, slot_state, 1, s)
        else:
            _ring_push(slot_ring, slot_state, 0, s)
        ids[s] = key
        idx.insert(table, ids, key, s)
        freq[s] = 0.0
        admit_slots[n_admit] = s
        admit_src[n_admit] = miss
        n_admit += 1
    size_cell[0] = n
    return n_admit, evicted


class S3FIFO(Policy):
    """S3-FIFO with a small queue of ``small_fraction`` of capacity and a ghost as big as main."""

    name: ClassVar[str] = "s3fifo"

    def __init__(self, buffer: PersistentBuffer, small_fraction: float = 0.1):
        super().__init__(buffer)
        if not 0.0 < small_fraction < 1.0:
            raise ValueError(f"s3fifo: small_fraction must lie in (0, 1), got {small_fraction}")
        cap = buffer.capacity
        self._small_target = max(1, round(small_fraction * cap))
        self._slot_ring = np.zeros((2, max(cap, 1)), dtype=np.int32)
        self._slot_state = np.zeros((2, 2), dtype=np.int64)
        ghost_cap = max(cap - self._small_target, 0)
        self._gkeys = np.zeros(ghost_cap, dtype=np.int64)
        self._gtable = idx.new_table(ghost_cap)
        self._gstate = np.zeros(2, dtype=np.int64)

    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        b = self.buffer
        return demand_step(
            b,
            ids,
            _s3fifo_step,
            b.table,
            b.ids,
            b.scores,
            b.size_cell,
            self._slot_ring,
            self._slot_state,
            self._small_target,
            self._gtable,
            self._gkeys,
            self._gstate,
            b.capacity,
        )
