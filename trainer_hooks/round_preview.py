"""What a replacement round would do right now, measured cheaply: the deciders' grounding.

A decider can only judge a round if it sees what the round would buy: how many rows it would
swap, how much the rows it would evict were still used, how often the rows it would admit were
missed. Those are facts about the whole buffer, and a minibatch must not cost O(buffer), so
the buffer side is read through a fixed systematic sample of slots (every ``stride``-th slot,
at most ``SAMPLE_SLOTS`` of them; all slots for buffers up to that size, where the figures are
exact). Each sampled slot keeps its hits over the last ``span`` minibatches (the window the
candidates' miss counts use too, ``MissTracker.span_counts``). Cost per minibatch: O(hits) to
keep the counts, O(sample) for the preview.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numba as nb
import numpy as np

from rudder.trainer_hooks.metrics import DEFAULT_WINDOW

SAMPLE_SLOTS = 4096  # exact up to this many slots; a +-1.6% (2 sigma) stale estimate above

_BEFORE = np.iinfo(np.int64).min // 2


@dataclass(frozen=True, slots=True)
class RoundPreview:
    """A replacement round at the end of the latest minibatch, had the decider said replace.

    ``evict_use`` is the mean number of hits over the last ``span`` minibatches of the rows it
    would evict (free slots evict nothing and do not count); ``admit_use`` the mean number of
    misses over the same span of the rows it would admit. A round pays when admitted rows are
    used more than the evicted ones were: ``swap_rows * (admit_use - evict_use)`` more hits per
    ``span`` minibatches, if the near future looks like the near past.
    """

    stale_slots: int = 0  # slots a round could refill (free ones included)
    swap_rows: int = 0  # rows it would put in: min(candidates, stale slots)
    evict_rows: int = 0  # ... of which would evict an entry (the rest fill free slots)
    evict_use: float = 0.0
    admit_use: float = 0.0
    # Misses of the latest minibatch also missed within the span before it: admitted rows
    # pay only if misses repeat.
    repeat_misses: int = 0


@nb.njit(cache=True)
def _count_hits(slots, stride, n_sample, hits_out):
    """Sample positions hit (``slots`` holds -1 for misses); returns how many."""
    n = 0
    for k in range(slots.shape[0]):
        s = slots[k]
        if s >= 0 and s % stride == 0:
            p = s // stride
            if p < n_sample:
                hits_out[n] = p
                n += 1
    return n


@nb.njit(cache=True)
def _add(win_hits, pos, delta, assigned, t0):
    for k in range(pos.shape[0]):
        p = pos[k]
        if assigned[p] < t0:  # hits of an entry that has since left do not count
            win_hits[p] += delta


@nb.njit(cache=True)
def _assign(win_hits, assigned, slots, stride, n_sample, t):
    for k in range(slots.shape[0]):
        s = slots[k]
        if s % stride == 0 and s // stride < n_sample:
            win_hits[s // stride] = 0
            assigned[s // stride] = t


class SlotSample:
    """Every ``stride``-th slot of a buffer, with its hits over the last ``span`` minibatches."""

    def __init__(self, capacity: int, span: int = DEFAULT_WINDOW, size: int = SAMPLE_SLOTS):
        if span < 1 or size < 1:
            raise ValueError("a slot sample needs span >= 1 and size >= 1")
        self.capacity = int(capacity)
        self.stride = max(1, -(-self.capacity // size))  # ceil: at most `size` samples
        self.n = -(-self.capacity // self.stride) if self.capacity else 0
        self.slots = np.arange(self.n, dtype=np.int64) * self.stride
        self.win_hits = np.zeros(self.n, dtype=np.int32)
        self.assigned = np.full(self.n, _BEFORE, dtype=np.int64)  # minibatch of entry's arrival
        self.span = int(span)
        self._hits: deque[tuple[int, np.ndarray]] = deque()
        self._buf = np.empty(0, dtype=np.int64)

    def on_hits(self, slots: np.ndarray, t: int) -> None:
        """Count minibatch ``t``'s hits (its lookup's slots, -1 for misses)."""
        if len(self._hits) == self.span:
            t0, old = self._hits.popleft()
            _add(self.win_hits, old, -1, self.assigned, t0)
        if self._buf.shape[0] < slots.shape[0]:
            self._buf = np.empty(slots.shape[0], dtype=np.int64)
        n = _count_hits(slots, self.stride, self.n, self._buf)
        pos = self._buf[:n].copy()
        _add(self.win_hits, pos, 1, self.assigned, t)
        self._hits.append((t, pos))

    def on_assign(self, slots: np.ndarray, t: int) -> None:
        """Slots that took a new entry at minibatch ``t`` (after its hits were counted)."""
        if slots.shape[0] and self.n:
            _assign(self.win_hits, self.assigned, slots.astype(np.int64), self.stride, self.n, t)

    def occupied(self, size: int) -> np.ndarray:
        """Sample positions whose slot holds an entry (slots ``0..size-1`` do)."""
        return np.arange(min(self.n, -(-size // self.stride)) if size else 0)


def preview(
    sample: SlotSample,
    values: np.ndarray,
    threshold: float,
    size: int,
    candidate_counts: np.ndarray,
    repeat_misses: int = 0,
) -> RoundPreview:
    """The round of the scored policy (free slots, then stale ones by rising score) in numbers.

    ``values`` are the scores of the occupied sample positions (``sample.occupied(size)``) now;
    ``candidate_counts`` the span miss counts of the round's candidates, best first.
    """
    free = sample.capacity - size
    pos = sample.occupied(size)
    stale = np.flatnonzero(values < threshold)
    frac = stale.shape[0] / pos.shape[0] if pos.shape[0] else 0.0
    stale_occ = round(frac * size)
    swap = min(int(candidate_counts.shape[0]), free + stale_occ)
    evict = max(0, swap - free)
    evict_use = 0.0
    if evict and stale.shape[0]:
        order = stale[np.argsort(values[stale], kind="stable")]
        m = min(order.shape[0], max(1, round(evict / size * pos.shape[0])))
        evict_use = float(sample.win_hits[pos[order[:m]]].mean())
    admit_use = float(candidate_counts[:swap].mean()) if swap else 0.0
    return RoundPreview(free + stale_occ, swap, evict, evict_use, admit_use, repeat_misses)
