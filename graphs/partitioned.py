"""DistDGL partitions plus Rudder's sidecar: what each trainer may fetch from afar.

``rudder graph partition`` writes, into one directory ``OUT``::

    OUT/<graph>.json                 DistDGL's partition config (pass it to DistDGL)
    OUT/part{p}/...                  DistDGL's partition files
    OUT/orig_nids.npy                int64[N]: original node id of each new (DistDGL) id
    OUT/part{p}/remote_ranking.npy   int64[R_p]: partition p's reachable remote nodes
    OUT/rudder.json                  the sidecar (written last; see :func:`load_partitions`)

DistDGL renumbers nodes so that partition ``p`` owns the contiguous new-id range
``node_range``. Partition ``p``'s *reachable remote nodes* are the nodes it does not own within
``hops`` hops of its training nodes: every remote id a ``hops``-layer minibatch can request.
The ranking sorts them by decreasing degree (ties by id), the static prefill order; a trainer
with buffer fraction ``f`` holds ``f * remote_node_count`` rows.

Loading needs neither DGL nor torch; writing (:func:`partition`) imports DGL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rudder.graphs.store import GraphData
    from rudder.graphs.synthetic import Progress

log = logging.getLogger(__name__)

SIDECAR = "rudder.json"
FORMAT = "rudder-partitions"
VERSION = 1
_GATHER_EDGES = 1 << 24  # neighbours gathered per block when expanding a frontier


class PartitionFormatError(ValueError):
    """A partition directory that cannot be used, with the reason and what to run."""


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition: the new ids it owns and its remote set."""

    part: int
    node_range: tuple[int, int]  # owns new ids node_range[0] <= id < node_range[1]
    local_nodes: int
    train_nodes: int
    remote_node_count: int
    remote_ranking: str  # path of the ranking, relative to the partition directory

    def to_json(self) -> dict:
        return {
            "part": self.part,
            "node_range": list(self.node_range),
            "local_nodes": self.local_nodes,
            "train_nodes": self.train_nodes,
            "remote_node_count": self.remote_node_count,
            "remote_ranking": self.remote_ranking,
        }


@dataclass(frozen=True, slots=True)
class PartitionSet:
    """A partitioned graph as ``rudder graph partition`` wrote it."""

    root: Path  # absolute
    graph: str  # DistDGL graph name
    config: Path  # absolute path of DistDGL's partition config, <graph>.json
    num_parts: int
    method: str  # "metis" or "random"
    hops: int
    num_nodes: int
    num_edges: int  # directed edges (both directions of each undirected edge)
    feat_dim: int
    num_classes: int
    partitions: tuple[PartitionInfo, ...]

    def remote_ranking(self, part: int) -> np.ndarray:
        """Partition ``part``'s reachable remote nodes (new ids), highest degree first."""
        info = self._info(part)
        path = self.root / info.remote_ranking
        if not path.is_file():
            raise PartitionFormatError(
                f"{path}: missing; run `rudder graph partition --out {self.root}` again"
            )
        ranking = np.load(path, allow_pickle=False)
        if ranking.dtype != np.int64 or ranking.shape != (info.remote_node_count,):
            raise PartitionFormatError(
                f"{path}: {ranking.dtype}{list(ranking.shape)}, expected "
                f"int64[{info.remote_node_count}]"
            )
        return ranking

    def part_of(self, nodes: np.ndarray) -> np.ndarray:
        """The partition owning each new id (a range lookup, like DistDGL's ``nid2partid``)."""
        ends = np.asarray([p.node_range[1] for p in self.partitions], dtype=np.int64)
        return np.searchsorted(ends, np.asarray(nodes, dtype=np.int64), side="right")

    def orig_nids(self) -> np.ndarray:
        """The original node id of each new id (memory-mapped)."""
        return np.load(self.root / "orig_nids.npy", mmap_mode="r", allow_pickle=False)

    def _info(self, part: int) -> PartitionInfo:
        if not 0 <= part < self.num_parts:
            raise ValueError(f"part must lie in [0, {self.num_parts}), got {part}")
        return self.partitions[part]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "graph": self.graph,
            "config": self.config.name,
            "num_parts": self.num_parts,
            "method": self.method,
            "hops": self.hops,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "feat_dim": self.feat_dim,
            "num_classes": self.num_classes,
            "partitions": [p.to_json() for p in self.partitions],
        }


def load_partitions(path: str | Path) -> PartitionSet:
    """Open a directory written by ``rudder graph partition`` (or its ``rudder.json``)."""
    root = Path(path)
    if root.name == SIDECAR and root.is_file():
        root = root.parent
    root = root.resolve()
    how = f"create it with `rudder graph partition --graph GRAPH_DIR --out {root}`"
    if not root.is_dir():
        raise PartitionFormatError(f"{root}: no such partition directory; {how}")
    sidecar = root / SIDECAR
    if not sidecar.is_file():
        raise PartitionFormatError(
            f"{root}: was not written by `rudder graph partition` (no {SIDECAR}); run it first: "
            f"`rudder graph partition --graph GRAPH_DIR --out {root}`"
        )
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise PartitionFormatError(
            f"{sidecar}: corrupt: {e}; run `rudder graph partition` again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PartitionFormatError(
            f"{sidecar}: was not written by `rudder graph partition`; run it first"
        )
    if meta.get("version") != VERSION:
        raise PartitionFormatError(
            f"{sidecar}: version {meta.get('version')!r}; this Rudder reads version {VERSION}: "
            "run `rudder graph partition` again"
        )
    try:
        parts = tuple(
            PartitionInfo(
                part=int(p["part"]),
                node_range=(int(p["node_range"][0]), int(p["node_range"][1])),
                local_nodes=int(p["local_nodes"]),
                train_nodes=int(p["train_nodes"]),
                remote_node_count=int(p["remote_node_count"]),
                remote_ranking=str(p["remote_ranking"]),
            )
            for p in meta["partitions"]
        )
        pset = PartitionSet(
            root=root,
            graph=str(meta["graph"]),
            config=root / str(meta["config"]),
            num_parts=int(meta["num_parts"]),
            method=str(meta["method"]),
            hops=int(meta["hops"]),
            num_nodes=int(meta["num_nodes"]),
            num_edges=int(meta["num_edges"]),
            feat_dim=int(meta["feat_dim"]),
            num_classes=int(meta["num_classes"]),
            partitions=parts,
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PartitionFormatError(f"{sidecar}: malformed ({type(e).__name__}: {e})") from None
    _check(pset, sidecar)
    return pset


def _check(pset: PartitionSet, sidecar: Path) -> None:
    if len(pset.partitions) != pset.num_parts:
        raise PartitionFormatError(
            f"{sidecar}: lists {len(pset.partitions)} partitions, num_parts is {pset.num_parts}"
        )
    start = 0
    for i, p in enumerate(pset.partitions):
        a, b = p.node_range
        if p.part != i or a != start or b < a:
            raise PartitionFormatError(f"{sidecar}: partition {i}'s node_range {[a, b]} is wrong")
        start = b
    if start != pset.num_nodes:
        raise PartitionFormatError(f"{sidecar}: node ranges end at {start}, not {pset.num_nodes}")
    if not pset.config.is_file():
        raise PartitionFormatError(
            f"{pset.config}: DistDGL's partition config is missing; run "
            f"`rudder graph partition --out {pset.root}` again"
        )


# ---------------------------------------------------------------------------------------------
# Writing.


def partition(
    data: GraphData,
    out: str | Path,
    *,
    parts: int,
    method: str = "metis",
    hops: int = 2,
    graph_name: str = "",
    on_progress: Progress | None = None,
) -> PartitionSet:
    """Partition ``data`` with DistDGL into ``out`` and write Rudder's sidecar.

    ``graph_name`` defaults to the graph's name, made safe for file and shared-memory names.
    ``on_progress("remote sets", done, parts)`` reports the sidecar step.
    """
    from rudder.graphs.dgl_convert import PART_METHODS, partition_dgl, safe_graph_name, to_dgl

    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if parts > data.num_nodes:
        raise ValueError(f"cannot cut {data.num_nodes} nodes into {parts} parts")
    if method not in PART_METHODS:
        raise ValueError(f"unknown partition method {method!r}; choose from {PART_METHODS}")
    if hops < 1:
        raise ValueError(f"hops must be >= 1, got {hops}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / SIDECAR).unlink(missing_ok=True)  # half-written partitions must not look complete
    name = safe_graph_name(graph_name or data.name)

    t0 = time.perf_counter()
    log.info("building the DGL graph (%d nodes, %d edges)", data.num_nodes, data.num_edges)
    g = to_dgl(data)
    log.info("partitioning into %d parts with %s (DistDGL)", parts, method)
    orig_nids = partition_dgl(g, graph_name=name, num_parts=parts, out=out, method=method)
    del g
    log.info("DistDGL partitioning took %.1f s", time.perf_counter() - t0)
    np.save(out / "orig_nids.npy", orig_nids)
    config = out / f"{name}.json"
    ranges = node_ranges(config)

    t0 = time.perf_counter()
    infos = []
    new_of_orig = np.empty_like(orig_nids)
    new_of_orig[orig_nids] = np.arange(orig_nids.shape[0], dtype=np.int64)
    degree = np.diff(data.indptr)[orig_nids]  # by new id
    train = np.asarray(data.train_mask)
    for p, (a, b) in enumerate(ranges):
        owned = orig_nids[a:b]
        seeds = owned[train[owned]]
        reached = new_of_orig[np.flatnonzero(within_hops(data.indptr, data.indices, seeds, hops))]
        remote = reached[(reached < a) | (reached >= b)]
        ranking = remote[np.lexsort((remote, -degree[remote]))]  # by degree, then id
        rel = f"part{p}/remote_ranking.npy"
        np.save(out / rel, ranking)
        infos.append(
            PartitionInfo(
                part=p,
                node_range=(a, b),
                local_nodes=b - a,
                train_nodes=int(seeds.shape[0]),
                remote_node_count=int(ranking.shape[0]),
                remote_ranking=rel,
            )
        )
        log.info(
            "part %d: %d nodes, %d train, %d reachable remote nodes",
            p,
            b - a,
            seeds.size,
            remote.size,
        )
        if on_progress is not None:
            on_progress("remote sets", p + 1, len(ranges))
    log.info("remote sets took %.1f s", time.perf_counter() - t0)

    pset = PartitionSet(
        root=out.resolve(),
        graph=name,
        config=config.resolve(),
        num_parts=parts,
        method=method,
        hops=hops,
        num_nodes=data.num_nodes,
        num_edges=data.num_edges,
        feat_dim=data.feat_dim,
        num_classes=data.num_classes,
        partitions=tuple(infos),
    )
    tmp = out / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(pset.to_json(), indent=2) + "\n")
    tmp.replace(out / SIDECAR)  # the sidecar appears only once everything else is written
    return load_partitions(out)


def node_ranges(config: str | Path) -> list[tuple[int, int]]:
    """The new-id range each partition owns, from DistDGL's partition config."""
    meta = json.loads(Path(config).read_text())
    node_map = meta["node_map"]
    if not isinstance(node_map, dict) or len(node_map) != 1:
        raise PartitionFormatError(f"{config}: expected one node type, got {list(node_map)}")
    ranges = [(int(a), int(b)) for a, b in next(iter(node_map.values()))]
    for i in range(1, len(ranges)):
        if ranges[i][0] != ranges[i - 1][1]:
            raise PartitionFormatError(f"{config}: node ranges are not contiguous: {ranges}")
    return ranges


def within_hops(
    indptr: np.ndarray, indices: np.ndarray, seeds: np.ndarray, hops: int
) -> np.ndarray:
    """``bool[N]``: the nodes at most ``hops`` hops from ``seeds`` (seeds included)."""
    n = indptr.shape[0] - 1
    seen = np.zeros(n, dtype=np.bool_)
    seen[seeds] = True
    frontier = np.flatnonzero(seen)
    for _ in range(hops):
        if frontier.size == 0:
            break
        reached = np.zeros(n, dtype=np.bool_)
        for nbrs in _neighbour_blocks(indptr, indices, frontier):
            reached[nbrs] = True
        reached &= ~seen
        seen |= reached
        frontier = np.flatnonzero(reached)
    return seen


def _neighbour_blocks(
    indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray
) -> Iterator[np.ndarray]:
    """The neighbours of ``nodes``, in blocks of about ``_GATHER_EDGES`` (bounded memory)."""
    starts = np.asarray(indptr[nodes])
    lens = np.asarray(indptr[nodes + 1]) - starts
    ends = np.cumsum(lens)
    cuts = np.searchsorted(ends, np.arange(_GATHER_EDGES, int(ends[-1]), _GATHER_EDGES))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, nodes.shape[0]], strict=True):
        s, ln = starts[lo:hi], lens[lo:hi]
        total = int(ln.sum())
        if total == 0:
            continue
        offs = np.repeat(s - np.cumsum(ln) + ln, ln) + np.arange(total)
        yield np.asarray(indices[offs])
