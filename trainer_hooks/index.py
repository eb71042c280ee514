"""Open-addressing hash index from int64 node ids to int32 positions, in numba.

The table stores positions only; the keys live in the caller's own ``keys`` array
(``keys[pos]`` is the id stored at ``pos``). That keeps the index at 4 bytes per table entry,
so a buffer's bookkeeping stays small next to the feature rows it indexes.

Linear probing with backward-shift deletion (no tombstones), Fibonacci hashing. Every
function is a plain ``@njit`` over arrays, so policies call them from their own kernels.
"""

from __future__ import annotations

import numba as nb
import numpy as np

EMPTY = np.int32(-1)
_FIB = np.uint64(0x9E3779B97F4A7C15)


def table_size(n_keys: int, max_load: float = 0.5) -> int:
    """Smallest power of two that holds ``n_keys`` at load factor ``max_load`` (at least 8)."""
    need = max(8, int(np.ceil(max(n_keys, 1) / max_load)))
    return 1 << (need - 1).bit_length()


def new_table(n_keys: int, max_load: float = 0.5) -> np.ndarray:
    """An empty table sized for ``n_keys`` keys."""
    return np.full(table_size(n_keys, max_load), EMPTY, dtype=np.int32)


@nb.njit(inline="always", cache=True)
def _home(key, mask):
    # Fibonacci hashing: multiply, keep the high bits. Node ids are often dense ranges,
    # which plain modulo hashing would cluster.
    h = np.uint64(key) * _FIB
    return np.int64(h >> np.uint64(32)) & mask


@nb.njit(cache=True)
def find(table, keys, key):
    """Position of ``key``, or -1."""
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while True:
        p = table[i]
        if p == EMPTY:
            return -1
        if keys[p] == key:
            return p
        i = (i + 1) & mask


@nb.njit(cache=True)
def insert(table, keys, key, pos):
    """Map ``key`` (absent, and already written at ``keys[pos]``) to ``pos``."""
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while table[i] != EMPTY:
        i = (i + 1) & mask
    table[i] = pos


@nb.njit(cache=True)
def remove(table, keys, key):
    """Unmap ``key`` (must be present; ``keys`` still holds it). Returns its position."""
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while keys[table[i]] != key:
        i = (i + 1) & mask
    pos = table[i]
    # Backward-shift deletion: pull later entries of the probe run into the hole so that
    # lookups never need tombstones.
    j = i
    while True:
        j = (j + 1) & mask
        p = table[j]
        if p == EMPTY:
            break
        home = _home(keys[p], mask)
        # Move p into the hole at i unless its home lies cyclically in (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            table[i] = p
            i = j
    table[i] = EMPTY
    return pos


@nb.njit(cache=True)
def find_many(table, keys, query, out):
    """Positions of every id in ``query`` into ``out`` (-1 where absent)."""
    for k in range(query.shape[0]):
        out[k] = find(table, keys, query[k])


@nb.njit(cache=True)
def rebuild(table, keys, n):
    """Fill an empty ``table`` with positions ``0..n-1`` of ``keys`` (after a resize)."""
    for p in range(n):
        insert(table, keys, keys[p], p)
