"""Partitions made of whole communities: contiguous node-id ranges, one per part.

Generated graphs number nodes community by community, so cutting the id range at community
boundaries gives each part mostly one block of communities, much as METIS would, and node
ownership is a range check (as after DistDGL's relabelling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rudder.graphs.synthetic import CSRGraph


@dataclass(frozen=True, slots=True)
class RangePartition:
    """Part ``p`` owns node ids ``bounds[p] <= id < bounds[p+1]``."""

    bounds: np.ndarray  # int64[P+1]

    @property
    def num_parts(self) -> int:
        return int(self.bounds.shape[0] - 1)

    def part_of(self, nodes: np.ndarray) -> np.ndarray:
        """Owning part of each node (like DistDGL's ``nid2partid``)."""
        return np.searchsorted(self.bounds, nodes, side="right") - 1

    def owns(self, part: int, nodes: np.ndarray) -> np.ndarray:
        return (nodes >= self.bounds[part]) & (nodes < self.bounds[part + 1])

    def nodes_of(self, part: int) -> np.ndarray:
        return np.arange(self.bounds[part], self.bounds[part + 1], dtype=np.int64)

    def size(self, part: int) -> int:
        return int(self.bounds[part + 1] - self.bounds[part])


def community_partition(graph: CSRGraph, parts: int) -> RangePartition:
    """Cut the id range into ``parts`` balanced ranges at community boundaries."""
    n = graph.num_nodes
    if not 1 <= parts <= n:
        raise ValueError(f"parts must lie in [1, {n}], got {parts}")
    # Community starts are the candidate cut points; take the one nearest each ideal cut.
    starts = np.flatnonzero(np.diff(graph.community, prepend=-1) != 0)
    cuts = [0]
    for p in range(1, parts):
        ideal = p * n / parts
        c = int(starts[np.argmin(np.abs(starts - ideal))])
        if c <= cuts[-1]:  # too few communities to cut here: fall back to the ideal point
            c = max(cuts[-1] + 1, int(ideal))
        cuts.append(c)
    cuts.append(n)
    return RangePartition(np.asarray(cuts, dtype=np.int64))
