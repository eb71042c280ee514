"""Synthetic access traces: what DistDGL trainers would request, without running DistDGL.

Each partition's training nodes are split among its trainers; every epoch a trainer shuffles
its nodes, cuts them into minibatches, samples each minibatch's input nodes, and records the
remote ones (owned by another partition). Sampling time is measured; fetch and compute times
are modelled (:class:`TimingModel`), and the trace says so in its metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rudder.graphs.partition import RangePartition, community_partition
from rudder.graphs.sampling import NeighborSampler
from rudder.graphs.synthetic import CSRGraph, GraphSpec, generate
from rudder.trainer_hooks.trace import AccessTrace, TraceMeta


@dataclass(kw_only=True, slots=True, frozen=True)
class TimingModel:
    """Stand-in timings for a synthetic trace: a 1 Gbit/s link and a CPU-bound model."""

    bandwidth_gbit_s: float = 1.0
    rpc_s: float = 1e-3  # per pull request
    compute_s_per_input: float = 1.5e-6  # forward + backward per input node

    def fetch_s(self, rows: int, row_bytes: int) -> float:
        return self.rpc_s + rows * row_bytes * 8 / (self.bandwidth_gbit_s * 1e9)

    def compute_s(self, inputs: int) -> float:
        return inputs * self.compute_s_per_input


@dataclass(kw_only=True, slots=True, frozen=True)
class SynthSpec:
    """A synthetic training run to record."""

    graph: GraphSpec = field(default_factory=GraphSpec)
    parts: int = 2
    trainers_per_part: int = 1
    epochs: int = 10
    batch_size: int = 1000
    fanouts: tuple[int, ...] = (10, 25)
    train_fraction: float = 0.1
    feat_dim: int = 100
    seed: int = 0
    timing: TimingModel = field(default_factory=TimingModel)

    def __post_init__(self) -> None:
        if self.parts < 2:
            raise ValueError("need at least 2 parts: with one there is no remote data")
        if self.trainers_per_part < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("trainers_per_part, epochs and batch_size must be >= 1")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1], got {self.train_fraction}")


def reachable_remote(
    graph: CSRGraph, partition: RangePartition, part: int, seeds: np.ndarray, hops: int
) -> np.ndarray:
    """Remote nodes within ``hops`` of ``seeds``: every remote id a minibatch could request."""
    seen = np.unique(seeds)
    frontier = seen
    for _ in range(hops):
        frontier = np.setdiff1d(np.unique(graph.neighbors_of(frontier)), seen, assume_unique=True)
        seen = np.union1d(seen, frontier)
    return seen[~partition.owns(part, seen)]


def train_nodes(partition: RangePartition, part: int, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, part])
    nodes = partition.nodes_of(part)
    k = max(1, round(fraction * nodes.shape[0]))
    return np.sort(rng.choice(nodes, size=k, replace=False))


def synthesize(
    spec: SynthSpec,
    graph: CSRGraph | None = None,
    on_minibatch: Callable[[], None] | None = None,
) -> list[AccessTrace]:
    """One access trace per trainer (``parts x trainers_per_part`` of them), by global rank."""
    graph = graph if graph is not None else generate(spec.graph)
    partition = community_partition(graph, spec.parts)
    degrees = graph.degrees()
    row_bytes = spec.feat_dim * 4
    traces = []
    for part in range(spec.parts):
        part_train = train_nodes(partition, part, spec.train_fraction, spec.seed)
        remote = reachable_remote(graph, partition, part, part_train, len(spec.fanouts))
        ranking = remote[np.lexsort((remote, -degrees[remote]))]  # by degree, then id
        for local_rank, mine in enumerate(np.array_split(part_train, spec.trainers_per_part)):
            rank = part * spec.trainers_per_part + local_rank
            sampler = NeighborSampler(graph, spec.fanouts, seed=spec.seed * 7919 + rank)
            rng = np.random.default_rng([spec.seed, rank, 1])
            batches, local_counts, epochs, sample_s = [], [], [], []
            for epoch in range(spec.epochs):
                order = rng.permutation(mine)
                for start in range(0, order.shape[0], spec.batch_size):
                    t0 = time.perf_counter()
                    inputs = sampler.input_nodes(order[start : start + spec.batch_size])
                    sample_s.append(time.perf_counter() - t0)
                    is_remote = ~partition.owns(part, inputs)
                    batches.append(inputs[is_remote])
                    local_counts.append(int(inputs.shape[0] - is_remote.sum()))
                    epochs.append(epoch)
                    if on_minibatch:
                        on_minibatch()
            remote_counts = np.array([b.shape[0] for b in batches])
            inputs_counts = remote_counts + np.array(local_counts)
            meta = TraceMeta(
                graph=f"synthetic-n{spec.graph.nodes}-d{spec.graph.avg_degree:g}-s{spec.graph.seed}",
                num_nodes=graph.num_nodes,
                num_edges=graph.num_edges,
                num_parts=spec.parts,
                part_id=part,
                trainer=rank,
                local_nodes=partition.size(part),
                remote_node_count=int(remote.shape[0]),
                fanouts=spec.fanouts,
                batch_size=spec.batch_size,
                feat_dim=spec.feat_dim,
                epochs=spec.epochs,
                source="synthetic",
                timings="modelled",
                seed=spec.seed,
                extra={
                    "train_nodes": int(mine.shape[0]),
                    "mixing": spec.graph.mixing,
                    "communities": spec.graph.communities,
                },
            )
            traces.append(
                AccessTrace.build(
                    meta,
                    batches,
                    local_counts=np.array(local_counts),
                    epochs=np.array(epochs),
                    sample_s=np.array(sample_s),
                    fetch_s=np.array([spec.timing.fetch_s(r, row_bytes) for r in remote_counts]),
                    compute_s=np.array([spec.timing.compute_s(i) for i in inputs_counts]),
                    prefill_ranking=ranking,
                )
            )
    return traces


def total_minibatches(spec: SynthSpec, graph: CSRGraph) -> int:
    """Minibatches :func:`synthesize` will record over all trainers (for progress bars)."""
    partition = community_partition(graph, spec.parts)
    total = 0
    for part in range(spec.parts):
        n_train = max(1, round(spec.train_fraction * partition.size(part)))
        for share in np.array_split(np.arange(n_train), spec.trainers_per_part):
            total += spec.epochs * -(-share.shape[0] // spec.batch_size)
    return total
