"""What every CSR-holding graph type answers the same way."""

from __future__ import annotations

import numpy as np


class CSRStructure:
    """Mixin for classes with ``indptr`` (int64[N+1]) and ``indices`` (int64[E]) fields.

    The graph is undirected with both directions stored: ``u``'s neighbours are
    ``indices[indptr[u]:indptr[u+1]]``.
    """

    __slots__ = ()
    indptr: np.ndarray
    indices: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_edges(self) -> int:
        """Directed edges stored (twice the undirected count)."""
        return int(self.indices.shape[0])

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def neighbors_of(self, nodes: np.ndarray) -> np.ndarray:
        """All neighbours of ``nodes``, concatenated (a vectorised ragged gather)."""
        starts = self.indptr[nodes]
        lens = self.indptr[nodes + 1] - starts
        total = int(lens.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        offs = np.repeat(starts - np.cumsum(lens) + lens, lens)
        return self.indices[offs + np.arange(total)]
