"""Replacement candidates, and the access history of every remote id outside the buffer.

Every missed remote id gets a *decayed miss count* (each miss adds 1; every minibatch
multiplies by ``decay``) and the minibatch of its last miss. A replacement round takes the
ids missed in the last ``window`` minibatches with the highest count (ties: the smallest id).
``decay=1`` keeps plain counts.

Beside the decayed count every tracked id keeps its plain miss count over the last ``span``
minibatches (``wcounts``): what a decider is shown of the rows a round would admit ("missed 3
times in the last 8 minibatches"), and whether a miss is a *repeat* (missed earlier in the
span). Keeping it costs O(misses) a minibatch: the misses leaving the span are subtracted.

The history survives a trip through the buffer: an id that enters takes its count along
(:meth:`MissTracker.take`) and one that is evicted brings its buffer-side count back
(:meth:`MissTracker.restore`), so an id's frequency is the same number wherever it lives,
which is what frequency-aware admission compares (docs/policies.md). Memory is O(distinct
remote ids ever missed), never O(graph nodes): the table grows as new ids appear.
"""

from __future__ import annotations

from collections import deque

import numba as nb
import numpy as np

from rudder.trainer_hooks import index as idx
from rudder.trainer_hooks.metrics import DEFAULT_WINDOW
from rudder.trainer_hooks.selection import smallest_k

_NEVER = np.iinfo(np.int64).min // 2
_POWERS = 4096  # decay ** steps is tabulated up to here; beyond, the count has decayed to 0


def decay_powers(decay: float) -> np.ndarray:
    """``decay ** k`` for k < 4096 (a table: a power per id and minibatch costs ~20 ns)."""
    return decay ** np.arange(_POWERS, dtype=np.float64)


@nb.njit(cache=True, inline="always")
def decayed(value, powers, steps):
    """``value * decay ** steps`` from the table (0 past its end; exact for decay 1)."""
    if powers[powers.shape[0] - 1] == 1.0:
        return value
    return value * powers[steps] if steps < powers.shape[0] else 0.0


@nb.njit(cache=True)
def _insert(table, keys, counts, last, wcounts, n_cell, key):
    n = n_cell[0]
    keys[n] = key
    counts[n] = 0.0
    last[n] = _NEVER
    wcounts[n] = 0
    idx.insert(table, keys, key, n)
    n_cell[0] = n + 1
    return n


@nb.njit(cache=True)
def _record(table, keys, counts, last, wcounts, n_cell, misses, t, powers):
    """Count the misses; returns how many were repeats (missed earlier in the span)."""
    repeats = 0
    for k in range(misses.shape[0]):
        key = misses[k]
        p = idx.find(table, keys, key)
        if p < 0:
            p = _insert(table, keys, counts, last, wcounts, n_cell, key)
        if last[p] != _NEVER and counts[p] > 0.0:
            counts[p] = decayed(counts[p], powers, t - last[p]) + 1.0
        else:
            counts[p] = 1.0
        last[p] = t
        if wcounts[p] > 0:
            repeats += 1
        wcounts[p] += 1
    return repeats


@nb.njit(cache=True)
def _expire(table, keys, wcounts, misses):
    for k in range(misses.shape[0]):
        p = idx.find(table, keys, misses[k])
        if p >= 0:
            wcounts[p] -= 1


@nb.njit(cache=True)
def _window_counts(wcounts, pos, out):
    for k in range(pos.shape[0]):
        out[k] = wcounts[pos[k]] if pos[k] >= 0 else 0


@nb.njit(cache=True)
def _take(table, keys, counts, last, ids, t, powers, out):
    for k in range(ids.shape[0]):
        p = idx.find(table, keys, ids[k])
        if p >= 0 and last[p] != _NEVER and counts[p] > 0.0:
            out[k] = decayed(counts[p], powers, t - last[p])
        else:
            out[k] = 0.0
        if p >= 0:
            counts[p] = 0.0
            last[p] = _NEVER


@nb.njit(cache=True)
def _restore(table, keys, counts, last, wcounts, n_cell, ids, values, t):
    for k in range(ids.shape[0]):
        p = idx.find(table, keys, ids[k])
        if p < 0:
            p = _insert(table, keys, counts, last, wcounts, n_cell, ids[k])
        counts[p] = values[k]
        last[p] = t


@nb.njit(cache=True)
def _ranks(counts, last, pos, t, powers, out):
    for k in range(pos.shape[0]):
        p = pos[k]
        out[k] = decayed(counts[p], powers, t - last[p])


class MissTracker:
    """Decayed miss counts of non-buffered remote ids, and the top replacement candidates."""

    def __init__(
        self,
        window: int = 1,
        decay: float = 1.0,
        initial_capacity: int = 1024,
        span: int = DEFAULT_WINDOW,
    ):
        if window < 1:
            raise ValueError(f"candidate window must be >= 1 minibatch, got {window}")
        if span < 1:
            raise ValueError(f"miss count span must be >= 1 minibatch, got {span}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"miss count decay must lie in (0, 1], got {decay}")
        self.window = int(window)
        self.decay = float(decay)
        self.powers = decay_powers(self.decay)
        cap = max(16, int(initial_capacity))
        self.keys = np.empty(cap, dtype=np.int64)
        self.counts = np.empty(cap, dtype=np.float64)
        self.last = np.empty(cap, dtype=np.int64)
        self.wcounts = np.empty(cap, dtype=np.int32)
        self.table = idx.new_table(cap)
        self._n = np.zeros(1, dtype=np.int64)
        # The misses of the last `window` minibatches: candidates come from these alone, so a
        # round costs O(window x misses), not O(every id ever missed).
        self._recent: deque[np.ndarray] = deque(maxlen=self.window)
        self.span = int(span)
        self._span: deque[np.ndarray] = deque()  # the misses of the last `span` minibatches
        self.repeats = 0  # misses of the latest minibatch that were missed within the span

    def __len__(self) -> int:
        return int(self._n[0])

    def _reserve(self, extra: int) -> None:
        need = len(self) + extra
        if need <= self.keys.shape[0]:
            return
        cap = max(need, 2 * self.keys.shape[0])
        n = len(self)
        for name in ("keys", "counts", "last", "wcounts"):
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
        if len(self._span) == self.span:
            _expire(self.table, self.keys, self.wcounts, self._span.popleft())
        self.repeats = 0
        if misses.shape[0]:
            self._reserve(misses.shape[0])
            args = (self.table, self.keys, self.counts, self.last, self.wcounts, self._n)
            self.repeats = int(_record(*args, misses, t, self.powers))
        self._recent.append(misses)
        self._span.append(misses)

    def take(self, node_ids: np.ndarray, t: int) -> np.ndarray:
        """The ids' counts as of minibatch ``t`` (0 if unknown); they leave the tracker."""
        out = np.empty(node_ids.shape[0], dtype=np.float64)
        _take(self.table, self.keys, self.counts, self.last, node_ids, t, self.powers, out)
        return out

    def restore(self, node_ids: np.ndarray, counts: np.ndarray, t: int) -> None:
        """Ids that left the buffer at minibatch ``t``, with the counts they had there."""
        if node_ids.shape[0] == 0:
            return
        self._reserve(node_ids.shape[0])
        args = (self.table, self.keys, self.counts, self.last, self.wcounts, self._n)
        _restore(*args, node_ids, np.asarray(counts, dtype=np.float64), t)

    def values(self, node_ids: np.ndarray, t: int) -> np.ndarray:
        """The counts of ``node_ids`` as of minibatch ``t`` (0 for ids never missed)."""
        pos = np.empty(node_ids.shape[0], dtype=np.int32)
        idx.find_many(self.table, self.keys, node_ids, pos)
        out = np.zeros(node_ids.shape[0], dtype=np.float64)
        known = pos >= 0
        vals = np.empty(int(known.sum()), dtype=np.float64)
        _ranks(self.counts, self.last, pos[known], t, self.powers, vals)
        out[known] = vals
        return out

    def span_counts(self, node_ids: np.ndarray) -> np.ndarray:
        """How often each id was missed in the last ``span`` minibatches (int32)."""
        pos = np.empty(node_ids.shape[0], dtype=np.int32)
        idx.find_many(self.table, self.keys, node_ids, pos)
        out = np.empty(node_ids.shape[0], dtype=np.int32)
        _window_counts(self.wcounts, pos, out)
        return out

    def top(self, k: int, t: int) -> np.ndarray:
        """Up to ``k`` ids missed in minibatches ``t-window+1 .. t``, highest count first."""
        if k <= 0 or not self._recent:
            return np.empty(0, dtype=np.int64)
        ids = self._recent[-1] if self.window == 1 else np.unique(np.concatenate(self._recent))
        pos = np.empty(ids.shape[0], dtype=np.int32)
        idx.find_many(self.table, self.keys, ids, pos)
        pos = pos[pos >= 0]
        pos = pos[self.last[pos] > t - self.window]  # drop ids that entered the buffer since
        if pos.size == 0:
            return np.empty(0, dtype=np.int64)
        vals = np.empty(pos.shape[0], dtype=np.float64)
        _ranks(self.counts, self.last, pos, t, self.powers, vals)
        # Highest count first (decay already favours recent misses), then the smallest id.
        return self.keys[pos[smallest_k(-vals, self.keys[pos], k)]]

    def memory_bytes(self) -> int:
        """Bytes held by the tracker's arrays."""
        arrays = (self.keys, self.counts, self.last, self.wcounts, self.table)
        return int(sum(a.nbytes for a in arrays))
