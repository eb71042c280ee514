"""Uniform neighbour sampling without replacement, as DGL's NeighborSampler does it.

``fanouts`` are per GNN layer, input layer first (DGL's convention): ``(10, 25)`` samples 25
neighbours of each seed, then 10 of each node of that layer (seeds included, since a DGL
block's source nodes contain its destination nodes). The last layer's nodes are the inputs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from rudder.graphs.synthetic import CSRGraph


@nb.njit(cache=True)
def _seed(seed):
    np.random.seed(seed)


@nb.njit(cache=True)
def _sample_layer(indptr, indices, frontier, fanout, out):
    """Write up to ``fanout`` distinct neighbours of each frontier node into ``out``."""
    n = 0
    for u in frontier:
        start = indptr[u]
        deg = indptr[u + 1] - start
        if deg <= fanout:
            for j in range(deg):
                out[n] = indices[start + j]
                n += 1
            continue
        # Floyd's algorithm: `fanout` distinct positions out of `deg`.
        first = n
        for j in range(deg - fanout, deg):
            r = np.random.randint(0, j + 1)
            pick = indices[start + r]
            for q in range(first, n):
                if out[q] == pick:
                    pick = indices[start + j]
                    break
            out[n] = pick
            n += 1
    return n


class NeighborSampler:
    """Samples the input nodes of a minibatch; seeded, deterministic."""

    def __init__(self, graph: CSRGraph, fanouts: tuple[int, ...], seed: int = 0):
        if not fanouts or min(fanouts) < 1:
            raise ValueError(f"fanouts must be positive, got {fanouts}")
        self.graph = graph
        self.fanouts = tuple(int(f) for f in fanouts)
        _seed(seed)

    def input_nodes(self, seeds: np.ndarray) -> np.ndarray:
        """Sorted unique input nodes of the minibatch rooted at ``seeds``."""
        g = self.graph
        frontier = np.unique(np.asarray(seeds, dtype=np.int64))
        for fanout in reversed(self.fanouts):
            out = np.empty(frontier.shape[0] * fanout, dtype=np.int64)
            n = _sample_layer(g.indptr, g.indices, frontier, fanout, out)
            # A block's source nodes include its destination nodes (as in DGL's blocks).
            frontier = np.unique(np.concatenate([frontier, out[:n]]))
        return frontier
