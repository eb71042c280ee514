"""Synthetic access traces: what DistDGL trainers would request, without running DistDGL.

Each partition's training nodes are split among its trainers; every epoch a trainer orders
its nodes, cuts them into minibatches, samples each minibatch's input nodes, and records the
remote ones (owned by another partition). Sampling time is measured; fetch and compute times
are modelled (:class:`TimingModel`), and the trace says so in its metadata.

How a trainer orders its nodes is the *scenario* (``SynthSpec.scenario``; docs/traces.md):

- ``stationary``: a uniform shuffle every epoch (DistDGL's default; access is stationary);
- ``locality``: nodes in proximity order, either a sweep by position from a random start
  (``locality_order="sweep"``) or community by community in a random order, shuffled within
  (``"phases"``);
- ``eval``: shuffled training, plus an evaluation pass over held-out nodes every
  ``eval_every`` epochs (marked in the trace);
- ``temporal``: epoch ``e`` trains on the nodes whose arrival time lies in a window that
  slides by ``window_step`` per epoch.

``partition="random"`` gives every node a seeded random owner (balanced), then renumbers
nodes part by part, as DistDGL does, so that parts are id ranges; a node's *position* (its
generator id: its place on the ring, or its community block) drives the locality orders.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rudder.graphs.partition import RangePartition, community_partition
from rudder.graphs.sampling import NeighborSampler
from rudder.graphs.synthetic import CSRGraph, GraphSpec, csr_from_keys, generate, node_times
from rudder.trainer_hooks.trace import AccessTrace, TraceMeta

SCENARIOS = ("stationary", "locality", "eval", "temporal")
PARTITIONS = ("community", "random")
LOCALITY_ORDERS = ("sweep", "phases")
TRAIN, EVAL = 0, 1  # per-minibatch phase codes


@dataclass(kw_only=True, slots=True, frozen=True)
class TimingModel:
    """Stand-in timings for a synthetic trace: a 1 Gbit/s link and a CPU-bound model."""

    bandwidth_gbit_s: float = 1.0
    rpc_s: float = 1e-3  # per pull request
    compute_s_per_input: float = 1.5e-6  # forward + backward per input node
    forward_share: float = 1 / 3  # an evaluation minibatch runs the forward pass only

    def fetch_s(self, rows: int, row_bytes: int) -> float:
        return self.rpc_s + rows * row_bytes * 8 / (self.bandwidth_gbit_s * 1e9)

    def compute_s(self, inputs: int, phase: int = TRAIN) -> float:
        return inputs * self.compute_s_per_input * (self.forward_share if phase == EVAL else 1)


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
    scenario: str = "stationary"  # one of SCENARIOS (module doc)
    partition: str = "community"  # "community" (whole-community ranges) or "random"
    locality_order: str = "sweep"  # locality: "sweep" by position or "phases" by community
    eval_every: int = 2  # eval: an evaluation pass after every eval_every-th epoch
    eval_fraction: float = 0.2  # eval: held-out nodes evaluated, as a fraction of the part
    eval_batch_size: int = 0  # eval: seeds per evaluation minibatch (0: 4 x batch_size)
    window: float = 0.3  # temporal: width of the arrival-time window an epoch trains on
    window_step: float = 0.1  # temporal: how far the window slides each epoch (wrapping)

    def __post_init__(self) -> None:
        if self.parts < 2:
            raise ValueError("need at least 2 parts: with one there is no remote data")
        if self.trainers_per_part < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("trainers_per_part, epochs and batch_size must be >= 1")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1], got {self.train_fraction}")
        for name, value, allowed in (
            ("scenario", self.scenario, SCENARIOS),
            ("partition", self.partition, PARTITIONS),
            ("locality_order", self.locality_order, LOCALITY_ORDERS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {allowed}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 epochs, got {self.eval_every}")
        if not 0.0 < self.eval_fraction <= 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1], got {self.eval_fraction}")
        if self.eval_batch_size < 0:
            raise ValueError(f"eval_batch_size must be >= 0, got {self.eval_batch_size}")
        if not 0.0 < self.window <= 1.0:
            raise ValueError(f"window must lie in (0, 1], got {self.window}")
        if not 0.0 <= self.window_step <= 1.0:
            raise ValueError(f"window_step must lie in [0, 1], got {self.window_step}")
        if self.scenario == "eval" and self.train_fraction >= 1.0:
            raise ValueError("eval needs held-out nodes: train_fraction must be < 1")

    @property
    def eval_batch(self) -> int:
        """Seeds per evaluation minibatch."""
        return self.eval_batch_size or 4 * self.batch_size

    @property
    def is_default_workload(self) -> bool:
        """Shuffled training on a DC-SBM graph cut into community blocks (the original)."""
        return (
            self.scenario == "stationary"
            and self.partition == "community"
            and self.graph.family == "dcsbm"
        )

    def knobs(self) -> dict:
        """The scenario and the knobs that shape it (recorded in each trace's ``meta.extra``)."""
        d: dict = {"scenario": self.scenario, "partition": self.partition}
        d["family"] = self.graph.family
        if self.graph.family == "ring":
            d["locality_scale"] = self.graph.locality_scale
        if self.scenario == "locality":
            d["locality_order"] = self.locality_order
        elif self.scenario == "eval":
            d["eval_every"] = self.eval_every
            d["eval_fraction"] = self.eval_fraction
            d["eval_batch_size"] = self.eval_batch
        elif self.scenario == "temporal":
            d["window"] = self.window
            d["window_step"] = self.window_step
        return d


@dataclass(frozen=True, slots=True)
class Layout:
    """Node ids as the trainers see them: parts are id ranges (DistDGL's renumbering).

    ``position[i]`` is node ``i``'s generator id (its place on the ring, its community block);
    ``community`` and ``time`` are per trainer-visible id. With ``partition="community"`` the
    ids are the generator's and ``position`` is the identity.
    """

    partition: RangePartition
    position: np.ndarray  # int64[N]
    community: np.ndarray  # int32[N]
    time: np.ndarray | None  # float32[N] arrival times (temporal scenario only)


def layout(spec: SynthSpec, graph: CSRGraph) -> Layout:
    """How ``spec`` partitions and numbers ``graph``'s nodes (cheap: no edges are touched)."""
    n = graph.num_nodes
    times = None
    if spec.scenario == "temporal":
        if spec.graph.nodes != n:
            raise ValueError(
                f"temporal traces need the graph of spec.graph ({spec.graph.nodes} nodes), got "
                f"a graph of {n}"
            )
        times = node_times(spec.graph)
    if spec.partition == "community":
        return Layout(community_partition(graph, spec.parts), np.arange(n), graph.community, times)
    if not spec.parts <= n:
        raise ValueError(f"parts must lie in [2, {n}], got {spec.parts}")
    # A balanced random owner per node, then ids renumbered part by part: new id i is
    # generator node perm[i], and part p owns a contiguous range of new ids.
    perm = np.random.default_rng([spec.seed, 6]).permutation(n)
    bounds = np.arange(spec.parts + 1, dtype=np.int64) * n // spec.parts
    return Layout(
        RangePartition(bounds),
        perm,
        graph.community[perm],
        None if times is None else times[perm],
    )


def relabel(graph: CSRGraph, position: np.ndarray) -> CSRGraph:
    """``graph`` with node ``position[i]`` renamed ``i`` (``community`` follows)."""
    n = graph.num_nodes
    new = np.empty(n, dtype=np.int64)
    new[position] = np.arange(n, dtype=np.int64)
    src = np.repeat(np.arange(n, dtype=np.int64), graph.degrees())
    once = src < graph.indices  # each undirected edge once
    a, b = new[src[once]], new[graph.indices[once]]
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    keys.sort()
    indptr, indices = csr_from_keys(keys, n)
    return CSRGraph(indptr=indptr, indices=indices, community=graph.community[position])


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


def eval_nodes(
    partition: RangePartition, part: int, train: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """A seeded sample of ``fraction`` of the part's nodes, none of them training nodes."""
    pool = np.setdiff1d(partition.nodes_of(part), train, assume_unique=True)
    k = min(pool.shape[0], max(1, round(fraction * partition.size(part))))
    rng = np.random.default_rng([seed, part, 2])
    return np.sort(rng.choice(pool, size=k, replace=False))


Minibatch = tuple[int, int, np.ndarray]  # (epoch, phase, seeds)


def schedule(
    spec: SynthSpec, lay: Layout, rank: int, mine: np.ndarray, evals: np.ndarray
) -> list[Minibatch]:
    """Trainer ``rank``'s minibatches, in order: the seeds of each, its epoch and phase.

    ``mine`` are the trainer's training nodes, ``evals`` its evaluation nodes (sorted ids).
    """
    rng = np.random.default_rng([spec.seed, rank, 1])
    out: list[Minibatch] = []

    def cut(order: np.ndarray, epoch: int, phase: int, size: int) -> None:
        out.extend((epoch, phase, order[a : a + size]) for a in range(0, order.shape[0], size))

    by_position = mine[np.argsort(lay.position[mine], kind="stable")]
    for epoch in range(spec.epochs):
        if spec.scenario == "locality" and spec.locality_order == "sweep":
            # A sweep around the ring (through the id order) from a random start.
            order = np.roll(by_position, -int(rng.integers(max(1, mine.shape[0]))))
        elif spec.scenario == "locality":
            # Communities in a random order, nodes shuffled within each.
            comm = lay.community[mine]
            rank_of = np.zeros(int(comm.max(initial=0)) + 1, dtype=np.int64)
            present = np.unique(comm)
            rank_of[present] = rng.permutation(present.shape[0])
            order = mine[np.lexsort((rng.random(mine.shape[0]), rank_of[comm]))]
        elif spec.scenario == "temporal":
            start = (epoch * spec.window_step) % 1.0
            inside = np.mod(lay.time[mine] - start, 1.0) < spec.window
            order = rng.permutation(mine[inside])
        else:
            order = rng.permutation(mine)
        cut(order, epoch, TRAIN, spec.batch_size)
        if spec.scenario == "eval" and (epoch + 1) % spec.eval_every == 0:
            # In id order, as an evaluation data loader (shuffle=False) visits its nodes.
            cut(evals, epoch, EVAL, spec.eval_batch)
    return out


def _shares(spec: SynthSpec, lay: Layout, part: int):
    """The part's training and evaluation nodes, and each trainer's share of both."""
    train = train_nodes(lay.partition, part, spec.train_fraction, spec.seed)
    evals = (
        eval_nodes(lay.partition, part, train, spec.eval_fraction, spec.seed)
        if spec.scenario == "eval"
        else np.empty(0, dtype=np.int64)
    )
    k = spec.trainers_per_part
    return train, evals, zip(np.array_split(train, k), np.array_split(evals, k), strict=True)


_BUILD_TAKES_PHASE = "phase" in inspect.signature(AccessTrace.build).parameters


def synthesize(
    spec: SynthSpec,
    graph: CSRGraph | None = None,
    on_minibatch: Callable[[], None] | None = None,
) -> list[AccessTrace]:
    """One access trace per trainer (``parts x trainers_per_part`` of them), by global rank.

    Node ids in the traces are the trainer-visible ids of :func:`layout` (the generator's ids
    unless ``spec.partition == "random"``).
    """
    graph = graph if graph is not None else generate(spec.graph)
    lay = layout(spec, graph)
    partition = lay.partition
    if spec.partition != "community":
        graph = relabel(graph, lay.position)
    degrees = graph.degrees()
    row_bytes = spec.feat_dim * 4
    traces = []
    for part in range(spec.parts):
        part_train, part_eval, shares = _shares(spec, lay, part)
        # Every remote id a minibatch could request: evaluation passes reach further.
        seeds = part_train if part_eval.shape[0] == 0 else np.union1d(part_train, part_eval)
        remote = reachable_remote(graph, partition, part, seeds, len(spec.fanouts))
        ranking = remote[np.lexsort((remote, -degrees[remote]))]  # by degree, then id
        for local_rank, (mine, my_eval) in enumerate(shares):
            rank = part * spec.trainers_per_part + local_rank
            sampler = NeighborSampler(graph, spec.fanouts, seed=spec.seed * 7919 + rank)
            batches, local_counts, epochs, phases, sample_s = [], [], [], [], []
            for epoch, phase, batch_seeds in schedule(spec, lay, rank, mine, my_eval):
                t0 = time.perf_counter()
                inputs = sampler.input_nodes(batch_seeds)
                sample_s.append(time.perf_counter() - t0)
                is_remote = ~partition.owns(part, inputs)
                batches.append(inputs[is_remote])
                local_counts.append(int(inputs.shape[0] - is_remote.sum()))
                epochs.append(epoch)
                phases.append(phase)
                if on_minibatch:
                    on_minibatch()
            remote_counts = np.array([b.shape[0] for b in batches])
            inputs_counts = remote_counts + np.array(local_counts)
            extra = {
                "train_nodes": int(mine.shape[0]),
                "mixing": spec.graph.mixing,
                "communities": spec.graph.communities,
            }
            if not spec.is_default_workload:  # the original traces stay byte for byte the same
                extra.update(spec.knobs())
            marks = np.array(phases, dtype=np.int8)
            if spec.scenario == "eval":
                extra["eval_nodes"] = int(my_eval.shape[0])
                extra["eval_minibatches"] = np.flatnonzero(marks == EVAL).tolist()
            # Only traces with evaluation passes carry the (optional) phase array.
            more = {"phase": marks} if _BUILD_TAKES_PHASE and marks.any() else {}
            meta = TraceMeta(
                graph=spec.graph.label,
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
                extra=extra,
            )
            traces.append(
                AccessTrace.build(
                    meta,
                    batches,
                    local_counts=np.array(local_counts),
                    epochs=np.array(epochs),
                    sample_s=np.array(sample_s),
                    fetch_s=np.array([spec.timing.fetch_s(r, row_bytes) for r in remote_counts]),
                    compute_s=np.array(
                        [
                            spec.timing.compute_s(i, p)
                            for i, p in zip(inputs_counts, phases, strict=True)
                        ]
                    ),
                    prefill_ranking=ranking,
                    **more,
                )
            )
    return traces


def total_minibatches(spec: SynthSpec, graph: CSRGraph) -> int:
    """Minibatches :func:`synthesize` will record over all trainers (for progress bars)."""
    if spec.scenario == "stationary":  # no need to order anything
        partition = layout(spec, graph).partition
        total = 0
        for part in range(spec.parts):
            n_train = max(1, round(spec.train_fraction * partition.size(part)))
            for share in np.array_split(np.arange(n_train), spec.trainers_per_part):
                total += spec.epochs * -(-share.shape[0] // spec.batch_size)
        return total
    lay = layout(spec, graph)
    total = 0
    for part in range(spec.parts):
        for local_rank, (mine, my_eval) in enumerate(_shares(spec, lay, part)[2]):
            rank = part * spec.trainers_per_part + local_rank
            total += len(schedule(spec, lay, rank, mine, my_eval))
    return total
