"""The persistent buffer: fixed-capacity storage of remote feature rows for one trainer.

Storage only. Which slot a row goes to, and when, is the policy's business
(:mod:`rudder.trainer_hooks.policies`); the trainer-side adapter reads hits from here and
writes fetched rows back. Slots ``0..size-1`` are occupied at all times: every policy evicts
only to make room for an insert, so the buffer fills in slot order and stays dense.
"""

from __future__ import annotations

import numpy as np

from rudder.trainer_hooks import index as idx

EMPTY_ID = -1


class PersistentBuffer:
    """``capacity`` rows of ``feat_dim`` features, their node ids, and a per-slot priority.

    ``scores``, ``freq`` and ``stamps`` belong to the owning policy: ``scores`` is its eviction
    priority (lower goes first), ``freq`` an optional second one (the scored policy's long-run
    use), ``stamps`` the minibatch or access counter of the slot's last update.
    ``feat_dim=0`` keeps ids and priorities only, which is all a trace replay needs.
    Memory is O(capacity): the id index costs 4 bytes per table entry at load <= 0.5.
    """

    def __init__(self, capacity: int, feat_dim: int = 0, dtype: np.dtype | str = np.float32):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        if feat_dim < 0:
            raise ValueError(f"feat_dim must be >= 0, got {feat_dim}")
        self.capacity = int(capacity)
        self.feat_dim = int(feat_dim)
        self.ids = np.full(self.capacity, EMPTY_ID, dtype=np.int64)
        self.rows = np.empty((self.capacity, self.feat_dim), dtype=dtype)
        # Touch every page now: the memory is committed up front, and no minibatch later pays
        # page faults for its first writes into the buffer.
        self.rows.fill(0)
        self.scores = np.zeros(self.capacity, dtype=np.float64)
        self.stamps = np.zeros(self.capacity, dtype=np.int64)
        # A second, slower-decaying priority (float32: 4 bytes a row) for policies that
        # weigh long-run use against recent use; it shares `stamps`.
        self.freq = np.zeros(self.capacity, dtype=np.float32)
        self.table = idx.new_table(self.capacity)
        # A one-element array so numba kernels can update the fill level in place.
        self._size = np.zeros(1, dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of occupied slots (always slots ``0..size-1``)."""
        return int(self._size[0])

    @property
    def size_cell(self) -> np.ndarray:
        """The fill level as a 1-element array, for kernels that insert."""
        return self._size

    def __len__(self) -> int:
        return self.size

    def __contains__(self, node_id: int) -> bool:
        return idx.find(self.table, self.ids, np.int64(node_id)) >= 0

    def lookup(self, node_ids: np.ndarray) -> np.ndarray:
        """Slot of each id (int32), -1 for ids not buffered."""
        node_ids = np.ascontiguousarray(node_ids, dtype=np.int64)
        slots = np.empty(node_ids.shape[0], dtype=np.int32)
        idx.find_many(self.table, self.ids, node_ids, slots)
        return slots

    def read(self, slots: np.ndarray) -> np.ndarray:
        """Copies of the rows at ``slots`` (valid slots only, e.g. ``plan.slots[plan.hits]``)."""
        # Plain fancy indexing: np.take(..., out=) buffers its output and runs ~2x slower.
        return self.rows[slots]

    def write_rows(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """Write rows in place. Only the replaced rows move; the matrix is never copied."""
        if self.feat_dim:
            self.rows[slots] = rows

    def occupied_ids(self) -> np.ndarray:
        """Ids currently buffered (a view, in slot order)."""
        return self.ids[: self.size]

    def memory_bytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.ids, self.rows, self.scores, self.freq, self.stamps, self.table, self._size)
        return int(sum(a.nbytes for a in arrays))

    def row_bytes(self) -> int:
        """Bytes of feature rows the buffer holds when full."""
        return int(self.rows.nbytes)
