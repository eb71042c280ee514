"""A fast, seeded generator of graphs that look like the ones GNNs train on.

Degree-corrected stochastic block model: each node has a power-law weight and a community;
an edge picks its source by weight, and with probability ``1 - mixing`` a destination in the
source's community (else anywhere), also by weight. Communities are contiguous id ranges, so a
partition made of whole communities is a contiguous range too, as after DistDGL's relabelling.
The result is undirected (both directions stored), without self loops or duplicate edges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True, frozen=True)
class GraphSpec:
    """Size and shape of a generated graph."""

    nodes: int = 200_000
    avg_degree: float = 15.0  # mean number of neighbours
    communities: int = 64
    mixing: float = 0.2  # fraction of edges that leave their community
    power_law_exponent: float = 2.5  # degree tail exponent (2 < a <= 3 is typical)
    max_weight_factor: float = 50.0  # cap a node's weight at this multiple of the mean
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ValueError(f"need at least 2 nodes, got {self.nodes}")
        if not 0 < self.avg_degree < self.nodes:
            raise ValueError(f"avg_degree must lie in (0, nodes), got {self.avg_degree}")
        if not 1 <= self.communities <= self.nodes:
            raise ValueError(f"communities must lie in [1, nodes], got {self.communities}")
        if not 0.0 <= self.mixing <= 1.0:
            raise ValueError(f"mixing must lie in [0, 1], got {self.mixing}")
        if self.power_law_exponent <= 1.0:
            raise ValueError("power_law_exponent must be > 1")


@dataclass(frozen=True, slots=True)
class CSRGraph:
    """An undirected graph in CSR form; ``u``'s neighbours: ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # int64[N+1]
    indices: np.ndarray  # int64[E] (both directions)
    community: np.ndarray  # int32[N]

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

    def save(self, path: str | Path) -> None:
        np.savez(path, indptr=self.indptr, indices=self.indices, community=self.community)

    @classmethod
    def load(cls, path: str | Path) -> CSRGraph:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["indptr"], z["indices"], z["community"])


def _community_sizes(spec: GraphSpec, rng: np.random.Generator) -> np.ndarray:
    # Moderately uneven sizes; every community gets at least one node.
    share = rng.dirichlet(np.full(spec.communities, 8.0))
    sizes = 1 + rng.multinomial(spec.nodes - spec.communities, share)
    return sizes.astype(np.int64)


def _weights(spec: GraphSpec, rng: np.random.Generator) -> np.ndarray:
    # Pareto(min 1) weights; the expected degree of a node is proportional to its weight.
    w = (1.0 - rng.random(spec.nodes)) ** (-1.0 / (spec.power_law_exponent - 1.0))
    return np.minimum(w, spec.max_weight_factor * w.mean())


def generate(spec: GraphSpec) -> CSRGraph:
    """Generate the graph described by ``spec`` (deterministic for a given seed)."""
    rng = np.random.default_rng(spec.seed)
    sizes = _community_sizes(spec, rng)
    community = np.repeat(np.arange(spec.communities, dtype=np.int32), sizes)
    w = _weights(spec, rng)
    cum = np.cumsum(w)
    total = cum[-1]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    lo = np.where(bounds[:-1] > 0, cum[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = cum[bounds[1:] - 1]

    m = round(spec.nodes * spec.avg_degree / 2)

    def draw(k: int) -> np.ndarray:
        """``k`` candidate edges as ``u * N + v`` keys (u < v), self loops dropped."""
        src = np.minimum(np.searchsorted(cum, rng.random(k) * total, side="right"), spec.nodes - 1)
        intra = rng.random(k) >= spec.mixing
        c = community[src]
        target = np.where(intra, lo[c] + rng.random(k) * (hi[c] - lo[c]), rng.random(k) * total)
        dst = np.minimum(np.searchsorted(cum, target, side="right"), spec.nodes - 1)
        keep = src != dst
        u, v = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
        return u.astype(np.int64) * spec.nodes + v

    # Hubs draw the same pair again and again; keep drawing until m distinct edges exist.
    keys = np.unique(draw(int(m * 1.1) + 16))
    for _ in range(30):
        if keys.shape[0] >= m:
            break
        keys = np.union1d(keys, draw(int((m - keys.shape[0]) * 1.5) + 16))
    else:
        log.warning("graph too dense for its degree distribution: %d of %d edges", keys.shape[0], m)
    keys = _sample_unique(keys, m, rng)
    u, v = keys // spec.nodes, keys % spec.nodes
    both_u = np.concatenate([u, v])
    both_v = np.concatenate([v, u])
    order = np.lexsort((both_v, both_u))
    indices = both_v[order]
    indptr = np.zeros(spec.nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(both_u, minlength=spec.nodes), out=indptr[1:])
    log.debug("generated %d nodes, %d undirected edges", spec.nodes, keys.shape[0])
    return CSRGraph(indptr=indptr, indices=indices.astype(np.int64), community=community)


def _sample_unique(keys: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``m`` distinct keys, chosen uniformly among the distinct ones."""
    uniq = np.unique(keys)
    if uniq.shape[0] <= m:
        return uniq
    return np.sort(rng.choice(uniq, size=m, replace=False))
