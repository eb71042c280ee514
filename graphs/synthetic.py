"""A fast, seeded generator of graphs that look like the ones GNNs train on.

Two families (``GraphSpec.family``), both with power-law node weights:

``dcsbm`` (the default): a degree-corrected stochastic block model. Each node has a weight and
a community; an edge picks its source by weight, and with probability ``1 - mixing`` a
destination in the source's community (else anywhere), also by weight. Communities are
contiguous id ranges, so a partition made of whole communities is a contiguous range too, as
after DistDGL's relabelling.

``ring``: a spatial graph. Nodes sit on a ring in id order; an edge picks its source by weight
and its destination ``source + round(Laplace(0, locality_scale))`` (mod N), so neighbours are
near in id. ``community`` is the position bucket ``id * communities // N``. Visiting nodes in
id order moves a minibatch's neighbourhood smoothly around the ring.

The result is undirected (both directions stored), without self loops or duplicate edges.
:func:`node_times` gives each node an arrival time in [0, 1) for time-ordered scenarios.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from rudder.graphs.csr import CSRStructure

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: ``done`` of ``total`` units of ``stage`` are finished."""


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
    family: str = "dcsbm"  # "dcsbm" (communities) or "ring" (spatial; see the module doc)
    locality_scale: float = 300.0  # ring: scale of an edge's id offset (Laplace), in ids

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
        if self.family not in FAMILIES:
            raise ValueError(f"unknown graph family {self.family!r}; choose from {FAMILIES}")
        if not self.locality_scale > 0:
            raise ValueError(f"locality_scale must be > 0 ids, got {self.locality_scale}")

    @property
    def label(self) -> str:
        """A short name: ``synthetic-n{N}-d{deg}-s{seed}`` (``synthetic-ring-...`` for rings)."""
        kind = "" if self.family == "dcsbm" else f"{self.family}-"
        return f"synthetic-{kind}n{self.nodes}-d{self.avg_degree:g}-s{self.seed}"


FAMILIES = ("dcsbm", "ring")


@dataclass(frozen=True, slots=True)
class CSRGraph(CSRStructure):
    """An undirected graph in CSR form with node communities."""

    indptr: np.ndarray  # int64[N+1]
    indices: np.ndarray  # int64[E] (both directions)
    community: np.ndarray  # int32[N]

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


def generate(spec: GraphSpec, on_progress: Progress | None = None) -> CSRGraph:
    """Generate the graph described by ``spec`` (deterministic for a given seed).

    Edges are drawn in blocks of a few million (``on_progress("edges", drawn, total)`` after
    each); the blocks read exactly the random numbers one big draw would, so the graph depends
    on ``spec`` alone. Peak memory is about 35 bytes per undirected edge.
    """
    if spec.family == "ring":
        return _generate_ring(spec, on_progress)
    rng = np.random.default_rng(spec.seed)
    sizes = _community_sizes(spec, rng)
    community = np.repeat(np.arange(spec.communities, dtype=np.int32), sizes)
    w = _weights(spec, rng)
    model = _EdgeModel(spec, community, np.cumsum(w), sizes)
    del w

    keys = _distinct_edges(model, rng, round(spec.nodes * spec.avg_degree / 2), on_progress)
    indptr, indices = csr_from_keys(keys, spec.nodes)
    log.debug("generated %d nodes, %d undirected edges", spec.nodes, keys.shape[0])
    return CSRGraph(indptr=indptr, indices=indices, community=community)


def _distinct_edges(model, rng: np.random.Generator, m: int, on_progress) -> np.ndarray:
    """``m`` distinct undirected edge keys drawn from ``model`` (both families)."""
    first = int(m * 1.1) + 16
    report = _Tally("edges", first, on_progress)
    # Hubs draw the same pair again and again; keep drawing until m distinct edges exist.
    keys = model.draw(rng, first, report)
    for _ in range(30):
        if keys.shape[0] >= m:
            break
        more = int((m - keys.shape[0]) * 1.5) + 16
        report.total += more
        keys = sorted_unique(np.concatenate([keys, model.draw(rng, more, report)]))
    else:
        log.warning("graph too dense for its degree distribution: %d of %d edges", keys.shape[0], m)
    return _sample_unique(keys, m, rng)


def _generate_ring(spec: GraphSpec, on_progress: Progress | None) -> CSRGraph:
    """The ``ring`` family: sources by weight, destinations a Laplace offset away on the ring."""
    rng = np.random.default_rng(spec.seed)
    n = spec.nodes
    cum = np.cumsum(_weights(spec, rng))
    model = _RingModel(n, spec.locality_scale, cum)
    keys = _distinct_edges(model, rng, round(n * spec.avg_degree / 2), on_progress)
    indptr, indices = csr_from_keys(keys, n)
    community = (np.arange(n, dtype=np.int64) * spec.communities // n).astype(np.int32)
    log.debug("generated a %d-node ring, %d undirected edges", n, keys.shape[0])
    return CSRGraph(indptr=indptr, indices=indices, community=community)


class _RingModel:
    """The ring family's edge distribution; draws candidate edges as sorted keys."""

    def __init__(self, n: int, locality_scale: float, cum: np.ndarray):
        self.n, self.locality_scale, self.cum = n, locality_scale, cum
        self.total = cum[-1]
        self.scale = n / self.total
        self.guide = np.searchsorted(cum, np.arange(n) / self.scale, side="right")

    def draw(self, rng: np.random.Generator, k: int, report: _Tally) -> np.ndarray:
        """Sorted distinct ``u * N + v`` keys (u < v) of ``k`` candidate edges, no self loops.

        Blocks of ``_BLOCK`` edges draw their sources, then their offsets, from ``rng`` in turn.
        """
        keys = np.empty(k, dtype=np.int64)
        filled = 0
        for a in range(0, k, _BLOCK):
            c = min(_BLOCK, k - a)
            src = np.empty(c, dtype=np.int64)
            _search_right(self.cum, self.guide, self.scale, rng.random(c) * self.total, src)
            offset = np.round(rng.laplace(0.0, self.locality_scale, c)).astype(np.int64)
            dst = (src + offset) % self.n
            filled = _pack_edges(src, dst, self.n, keys, filled)
            report.add(c)
        return sorted_unique(keys[:filled])


def _pack_edges(src: np.ndarray, dst: np.ndarray, n: int, keys: np.ndarray, filled: int) -> int:
    """Write the undirected keys ``min * n + max`` of the non-loop pairs at ``keys[filled:]``."""
    keep = src != dst
    u, v = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    got = u.shape[0]
    np.multiply(u, n, out=keys[filled : filled + got])
    keys[filled : filled + got] += v
    return filled + got


def node_times(spec: GraphSpec) -> np.ndarray:
    """Each node's arrival time in [0, 1) (float32[N]), for time-ordered training.

    ``ring``: the node's position ``id / N`` plus Gaussian noise of ``locality_scale`` ids
    (wrapped), so nodes that arrive together are neighbours. ``dcsbm``: uniform. Drawn from
    the seeded stream ``[seed, 5]``, independent of the graph's own stream.
    """
    rng = np.random.default_rng([spec.seed, 5])
    n = spec.nodes
    if spec.family == "ring":
        pos = np.arange(n, dtype=np.float64) + rng.normal(0.0, spec.locality_scale, n)
        t = np.mod(pos / n, 1.0)
    else:
        t = rng.random(n)
    # float32 may round a value just below 1 up to 1.0: keep the interval half-open.
    return np.minimum(t.astype(np.float32), np.nextafter(np.float32(1), np.float32(0)))


class _Tally:
    """Cumulative progress of one stage, reported through an optional callback."""

    def __init__(self, stage: str, total: int, on_progress: Progress | None):
        self.stage, self.total, self.done, self._cb = stage, total, 0, on_progress

    def add(self, n: int) -> None:
        self.done += n
        if self._cb is not None:
            self._cb(self.stage, self.done, self.total)


class _EdgeModel:
    """The degree-corrected SBM's edge distribution; draws candidate edges as sorted keys."""

    def __init__(self, spec: GraphSpec, community: np.ndarray, cum: np.ndarray, sizes):
        self.n = spec.nodes
        self.mixing = spec.mixing
        self.community = community
        self.cum = cum
        self.total = cum[-1]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        # Cumulative weight just before and at the end of each community's id range.
        self.lo = np.where(bounds[:-1] > 0, cum[np.maximum(bounds[:-1] - 1, 0)], 0.0)
        self.hi = cum[bounds[1:] - 1]
        # guide[b]: first node whose cumulative weight passes the start of bucket b (n equal
        # buckets); a lookup then scans about one node instead of a 24-step binary search.
        self.scale = self.n / self.total
        self.guide = np.searchsorted(cum, np.arange(self.n) / self.scale, side="right")

    def node_at(self, x: np.ndarray) -> np.ndarray:
        """Node whose weight interval holds ``x``: ``min(searchsorted(cum, x, "right"), n-1)``."""
        out = np.empty(x.shape[0], dtype=np.int64)
        _search_right(self.cum, self.guide, self.scale, x, out)
        return out

    def draw(self, rng: np.random.Generator, k: int, report: _Tally) -> np.ndarray:
        """Sorted distinct ``u * N + v`` keys (u < v) of ``k`` candidate edges, no self loops.

        One draw of ``k`` edges reads four consecutive runs of ``k`` doubles from ``rng``
        (sources, intra/inter coins, intra targets, global targets). Each block of edges takes
        its slice of every run from a copy of the generator advanced to it, and ``rng`` ends
        where a single draw would leave it: the result does not depend on the block size.
        """
        start = rng.bit_generator.state
        runs = [_advanced(rng, j * k) for j in range(4)]
        keys = np.empty(k, dtype=np.int64)
        filled = 0
        for a in range(0, k, _BLOCK):
            c = min(_BLOCK, k - a)
            src = self.node_at(runs[0].random(c) * self.total)
            intra = runs[1].random(c) >= self.mixing
            comm = self.community[src]
            lo, hi = self.lo[comm], self.hi[comm]
            target = np.where(
                intra, lo + runs[2].random(c) * (hi - lo), runs[3].random(c) * self.total
            )
            dst = self.node_at(target)
            filled = _pack_edges(src, dst, self.n, keys, filled)
            report.add(c)
        end = runs[3].bit_generator.state
        # Doubles never touch PCG64's buffered 32-bit half-word: keep the caller's.
        end["has_uint32"], end["uinteger"] = start["has_uint32"], start["uinteger"]
        rng.bit_generator.state = end
        return sorted_unique(keys[:filled])


_BLOCK = 1 << 22  # edges per block: ~250 MB of temporaries whatever the graph size


def _advanced(rng: np.random.Generator, steps: int) -> np.random.Generator:
    """A copy of ``rng`` moved ``steps`` 64-bit outputs (= doubles) ahead; ``rng`` is untouched."""
    bits = type(rng.bit_generator)()
    bits.state = rng.bit_generator.state
    bits.advance(steps)
    return np.random.Generator(bits)


def _sample_unique(keys: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``m`` of the sorted distinct ``keys``, chosen uniformly, sorted."""
    if keys.shape[0] <= m:
        return keys
    out = rng.choice(keys, size=m, replace=False)
    out.sort()
    return out


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)``, sorting ``a`` in place and returning a prefix of it (no copy)."""
    a.sort()
    return a[: _compact_sorted(a)]


def csr_from_keys(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (both directions, rows sorted) of the undirected edges ``u * n + v``.

    ``keys`` must be sorted and distinct with ``u < v``. A counting sort: two passes over the
    keys, no sort and no second copy of the edge list.
    """
    indptr = np.zeros(n + 1, dtype=np.int64)
    smaller = np.zeros(n, dtype=np.int64)  # neighbours with a lower id, per node
    _count_degrees(keys, n, indptr[1:], smaller)
    np.cumsum(indptr, out=indptr)
    indices = np.empty(int(indptr[-1]), dtype=np.int64)
    _fill_rows(keys, n, indptr, smaller, indices)
    return indptr, indices


@nb.njit(cache=True, nogil=True)
def _search_right(cum, guide, scale, x, out):
    n = cum.shape[0]
    buckets = guide.shape[0]
    for j in range(x.shape[0]):
        xj = x[j]
        b = min(max(int(xj * scale), 0), buckets - 1)
        i = guide[b]
        # The guide is only a starting point: rounding in xj * scale may put it one off.
        while i > 0 and cum[i - 1] > xj:
            i -= 1
        while i < n and cum[i] <= xj:
            i += 1
        out[j] = min(i, n - 1)


@nb.njit(cache=True, nogil=True)
def _compact_sorted(a):
    if a.shape[0] == 0:
        return 0
    k = 1
    for i in range(1, a.shape[0]):
        if a[i] != a[k - 1]:
            a[k] = a[i]
            k += 1
    return k


@nb.njit(cache=True, nogil=True)
def _count_degrees(keys, n, degree, smaller):
    for key in keys:
        u = key // n
        v = key - u * n
        degree[u] += 1
        degree[v] += 1
        smaller[v] += 1


@nb.njit(cache=True, nogil=True)
def _fill_rows(keys, n, indptr, smaller, indices):
    # Row x holds its lower neighbours, then its higher ones. Keys are sorted by (u, v), so
    # each half fills in increasing order: the rows come out sorted.
    low = indptr[:-1].copy()
    high = indptr[:-1] + smaller
    for key in keys:
        u = key // n
        v = key - u * n
        indices[low[v]] = u
        low[v] += 1
        indices[high[u]] = v
        high[u] += 1
