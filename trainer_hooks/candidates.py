"""Replacement candidates: remote nodes that keep missing the buffer.

Every missed remote id gets a miss count and the minibatch of its last miss. A replacement
round takes the most-missed ids among those missed in the last ``window`` minibatches (ties:
the most recent, then the smallest id). Memory is O(distinct remote ids ever missed), never
O(graph nodes): the table grows as new ids appear.
"""

from __future__ import annotations

from collections import deque

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.selection import smallest_k

_NEVER = np.iinfo(np.int64).min // 2


@nb.njit(cache=True)
def _record(table, keys, counts, last, n_cell, misses, t):
    n = n_cell[0]
    for k in range(misses.shape[0]):
        key = misses[k]
        p = idx.find(table, keys, key)
        if p < 0:
            p = n
            keys[p] = key
            counts[p] = 0
            idx.insert(table, keys, key, p)
            n += 1
        counts[p] += 1
        last[p] = t
    n_cell[0] = n


@nb.njit(cache=True)
def _forget(table, keys, counts, last, ids):
    for k in range(ids.shape[0]):
        p = idx.find(table, keys, ids[k])
        if p >= 0:
            counts[p] = 0
            last[p] = _NEVER


class MissTracker:
    """Miss counts of non-buffered remote ids, and the top candidates for a replacement."""

    def __init__(self, window: int = 1, initial_capacity: int = 1024):
        if window < 1:
            raise ValueError(f"candidate window must be >= 1 minibatch, got {window}")
        self.window = int(window)
        cap = max(16, int(initial_capacity))
        self.keys = np.empty(cap, dtype=np.int64)
        self.counts = np.empty(cap, dtype=np.int64)
        self.last = np.empty(cap, dtype=np.int64)
        self.table = idx.new_table(cap)
        self._n = np.zeros(1, dtype=np.int64)
        # The misses of the last `window` minibatches: candidates come from these alone, so a
        # round costs O(window x misses), not O(every id ever missed).
        self._recent: deque[np.ndarray] = deque(maxlen=self.window)

    def __len__(self) -> int:
        return int(self._n[0])

    def _reserve(self, extra: int) -> None:
        need = len(self) + extra
        if need <= self.keys.shape[0]:
            return
        cap = max(need, 2 * self.keys.shape[0])
        n = len(self)
        for name in ("keys", "counts", "last"):
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        self.table = idx.new_table(cap)
        idx.rebuild(self.table, self.keys, n)

    def record(self, misses: np.ndarray, t: int) -> None:
        """Count one miss for each id in ``misses`` (unique ids) at minibatch ``t``.

        Call once per minibatch, empty or not: the recency window counts calls.
        """
        if misses.shape[0] == 0:
            self._recent.append(misses)
            return
        self._reserve(misses.shape[0])
        _record(self.table, self.keys, self.counts, self.last, self._n, misses, t)
        self._recent.append(misses)

    def forget(self, node_ids: np.ndarray) -> None:
        """Drop the history of ids that just entered the buffer."""
        _forget(self.table, self.keys, self.counts, self.last, node_ids)

    def top(self, k: int, t: int) -> np.ndarray:
        """Up to ``k`` ids missed in minibatches ``t-window+1 .. t``, most-missed first."""
        if k <= 0 or not self._recent:
            return np.empty(0, dtype=np.int64)
        ids = self._recent[-1] if self.window == 1 else np.unique(np.concatenate(self._recent))
        pos = np.empty(ids.shape[0], dtype=np.int32)
        idx.find_many(self.table, self.keys, ids, pos)
        pos = pos[self.last[pos] > t - self.window]  # drop ids that entered the buffer since
        if pos.size == 0:
            return np.empty(0, dtype=np.int64)
        # One int64 key orders by count, then recency (negated: best first); ties by id.
        key = -((self.counts[pos] << 32) | (self.last[pos] & 0xFFFFFFFF))
        return self.keys[pos[smallest_k(key, self.keys[pos], k)]]

    def memory_bytes(self) -> int:
        """Bytes held by the tracker's arrays."""
        return int(sum(a.nbytes for a in (self.keys, self.counts, self.last, self.table)))
