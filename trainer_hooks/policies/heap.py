"""An indexed binary min-heap over buffer slots, in numba.

Slots are ordered by ``(key1[slot], key2[slot])``: the buffer's ``scores`` and ``stamps``.
``pos[slot]`` is the slot's place in ``heap``, so a slot whose key changed is re-placed in
O(log n). The root is the next victim.
"""

from __future__ import annotations

import numba as nb


@nb.njit(inline="always", cache=True)
def _less(key1, key2, a, b):
    return key1[a] < key1[b] or (key1[a] == key1[b] and key2[a] < key2[b])


@nb.njit(cache=True)
def sift_up(heap, pos, key1, key2, i):
    """Move ``heap[i]`` towards the root until its parent is not larger."""
    s = heap[i]
    while i > 0:
        parent = (i - 1) >> 1
        p = heap[parent]
        if not _less(key1, key2, s, p):
            break
        heap[i] = p
        pos[p] = i
        i = parent
    heap[i] = s
    pos[s] = i


@nb.njit(cache=True)
def sift_down(heap, pos, key1, key2, n, i):
    """Move ``heap[i]`` towards the leaves until no child is smaller."""
    s = heap[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        right = child + 1
        if right < n and _less(key1, key2, heap[right], heap[child]):
            child = right
        c = heap[child]
        if not _less(key1, key2, c, s):
            break
        heap[i] = c
        pos[c] = i
        i = child
    heap[i] = s
    pos[s] = i


@nb.njit(cache=True)
def push(heap, pos, key1, key2, n, slot):
    """Add ``slot`` to a heap of ``n`` entries (the caller counts the new size)."""
    heap[n] = slot
    pos[slot] = n
    sift_up(heap, pos, key1, key2, n)


@nb.njit(cache=True)
def update(heap, pos, key1, key2, n, slot):
    """Re-place ``slot`` after its key changed in either direction."""
    i = pos[slot]
    sift_up(heap, pos, key1, key2, i)
    sift_down(heap, pos, key1, key2, n, pos[slot])
