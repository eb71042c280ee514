"""Rudder in any DistDGL training script: ``feats[input_nodes]`` served through the buffer.

:class:`BufferedFeatures` wraps a node-feature ``DistTensor`` (``g.ndata["feat"]``)::

    feats = BufferedFeatures.from_graph(g, "feat")          # config: kwargs and environment
    for input_nodes, seeds, blocks, x in feats.prefetch(dataloader):
        ...                                                 # x == g.ndata["feat"][input_nodes]
    feats.close()

``feats[input_nodes]`` returns exactly the rows a plain ``DistTensor`` read returns, hits from
the persistent buffer and everything else in one pull. The object owns the buffer policy, the
accounting, the decision channel (rules in process, or this machine's agent sidecar over
ZeroMQ, sync or async), the metrics stream and trace recording; :meth:`prefetch` overlaps the
next minibatch's sampling and fetch with the current one's compute. It never imports DGL: the
graph is only asked for its partition book and sizes (:mod:`~rudder.trainer_hooks.distdgl.facts`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rudder.decisions import Decider
from rudder.protocol import TrainerInfo
from rudder.trainer_hooks.channel import Channel, open_channel
from rudder.trainer_hooks.fetcher import BufferedFetcher, Fetched
from rudder.trainer_hooks.hook import MinibatchHook, decider_for
from rudder.trainer_hooks.lookahead import LookAhead
from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.options import RudderConfig
from rudder.trainer_hooks.policies.base import PolicyContext
from rudder.trainer_hooks.policies.registry import (
    PolicySpec,
    ScoredOptions,
    builtin_decider,
    make_policy,
    warm_up,
)
from rudder.trainer_hooks.results import PartitionFacts, TrainerResults
from rudder.trainer_hooks.trace import PHASES, TraceRecorder

log = logging.getLogger(__name__)

Source = Callable[[torch.Tensor], torch.Tensor]


@dataclass(slots=True)
class Batch:
    """One prepared minibatch: the loader's item, its features, and how they were obtained."""

    item: tuple  # what the loader yielded: (input_nodes, seeds, blocks) for DGL's loaders
    x: torch.Tensor  # the features of item[0]
    fetched: Fetched
    sample_s: float  # inside the loader's next()
    prepare_s: float = 0.0  # inside the ``prepare`` callback (labels, device moves)
    wait_s: float = 0.0  # the consumer blocked on the look-ahead for this batch
    extra: Any = None  # what ``prepare`` attached (labels, ...)
    step: dict = field(default_factory=dict)  # its line in steps-rank-R.jsonl; annotate freely


class BufferedFeatures:
    """A ``DistTensor`` of node features with Rudder's persistent buffer in front of it."""

    def __init__(
        self,
        source: Source,
        facts: PartitionFacts,
        config: RudderConfig | None = None,
        *,
        rank: int = 0,
        decider: Decider | None = None,
        channel: Channel | None = None,
        feat_dim: int | None = None,
    ):
        """Build the hook for one trainer.

        ``source(ids)`` reads rows plainly (the ``DistTensor``); ``facts`` describe the
        partition (owned id range, reachable remote nodes); ``decider`` replaces the config's
        rule by any :class:`~rudder.decisions.Decider` object run in process (a classifier);
        ``channel`` replaces the whole decision link (tests).
        """
        self.config = config or RudderConfig()
        self.source = source
        self.facts = facts
        self.rank = rank
        cfg = self.config
        spec = PolicySpec.parse(cfg.policy)
        dim = feat_dim if feat_dim is not None else facts.feat_dim
        capacity = (
            cfg.buffer_rows
            if cfg.buffer_rows is not None
            else round(cfg.buffer_fraction * facts.remote_nodes)
        )
        ranking = facts.prefill_ranking if spec.name in ("static", "periodic") else None
        options = ScoredOptions(
            scoring=cfg.scoring,
            candidate_window=cfg.candidate_window,
            fill_free=cfg.fill_free,
            admission=cfg.admission,
        )
        policy = make_policy(
            spec, capacity, PolicyContext(prefill_ranking=ranking), feat_dim=dim, options=options
        )
        warm_up(spec, feat_dim=dim)
        self.decider_spec = decider_for(policy, spec, cfg.decider)
        self.decider_name = str(self.decider_spec) if self.decider_spec is not None else None
        if channel is None and self.decider_spec is not None:
            # A baseline (static, fixed, periodic) is defined by its own rule: a caller's
            # decider object only replaces the decider of `rudder`.
            own = decider if builtin_decider(spec) is None else None
            channel = open_channel(cfg, self.decider_spec, rank, decider=own)
            self.decider_name = own.spec if own is not None else self.decider_name
        self.channel = channel
        self.accounting = Accounting(trainer=rank, capacity=policy.capacity, row_bytes=dim * 4)
        recorder = TraceRecorder() if cfg.record_trace and cfg.out_dir else None
        self.hook = MinibatchHook(policy, self.accounting, channel, recorder)
        self.fetcher = BufferedFetcher(self.hook, source, facts.owned)
        self.results = TrainerResults(self, cfg.out_dir)
        self.epoch = 0
        self._started = False
        self._closed = False
        self._last_compute_s = 0.0  # written by the consumer's thread, read when fetching
        self._returned_at: float | None = None  # plain reads: when the last one returned

    # -- construction from a DistGraph ---------------------------------------------------------

    @classmethod
    def from_graph(
        cls,
        g: Any,
        name: str = "feat",
        config: RudderConfig | None = None,
        *,
        decider: Decider | None = None,
        **kwargs: Any,
    ) -> BufferedFeatures:
        """The buffered ``g.ndata[name]`` of a ``DistGraph``, for this trainer.

        ``kwargs`` are :class:`RudderConfig` fields (``policy="rudder", buffer_fraction=0.05``);
        what ``rudder train`` or ``RUDDER_*`` variables set in the environment wins over them.
        """
        from rudder.trainer_hooks.distdgl.facts import graph_facts, trainer_rank

        cfg = config or RudderConfig.from_env(**kwargs)
        source = g.ndata[name]
        facts = graph_facts(g, feat_dim=int(source.shape[1]))
        return cls(source.__getitem__, facts, cfg, rank=trainer_rank(), decider=decider)

    # -- one minibatch -------------------------------------------------------------------------

    def __getitem__(self, input_nodes: torch.Tensor) -> torch.Tensor:
        """The rows of ``input_nodes``, exactly as ``source[input_nodes]`` returns them."""
        now = time.perf_counter()
        if self._returned_at is not None:  # plain use: compute (+ sampling) since the last read
            self.note_compute(self.hook.t - 1, now - self._returned_at)
        x = self.fetch(input_nodes).x
        self._returned_at = time.perf_counter()
        return x

    def fetch(
        self, input_nodes: torch.Tensor, *, sample_s: float = 0.0, phase: str = "train"
    ) -> Fetched:
        """:meth:`__getitem__` with everything it did (plan, timings, metrics).

        ``phase`` says what the read is for: ``train`` or ``eval`` (recorded in traces, so
        replay and the drift measure can tell an evaluation pass from training).
        """
        if self._closed:
            raise RuntimeError("BufferedFeatures is closed")
        self._start()
        input_nodes = torch.as_tensor(input_nodes, dtype=torch.int64)
        f = self.fetcher.fetch(
            input_nodes,
            epoch=self.epoch,
            sample_s=sample_s,
            compute_s=self._last_compute_s,
            phase=_phase_index(phase),
        )
        if self.config.verify_features:
            self.results.verify(f, self.source(input_nodes))
        return f

    def note_compute(self, minibatch: int, seconds: float) -> None:
        """The consumer's compute time for ``minibatch`` (metrics, traces, step log)."""
        self._last_compute_s = seconds
        if self.hook.recorder is not None:
            self.hook.recorder.set_compute(minibatch, seconds)

    # -- loops ---------------------------------------------------------------------------------

    def prefetch(
        self,
        loader: Iterable,
        *,
        labels: Any = None,
        device: torch.device | str | None = None,
        overlap: bool = True,
        phase: str = "train",
    ) -> Iterator[tuple]:
        """The loader's items with their features appended: ``(*item, x)``, one epoch.

        With ``overlap`` the next minibatch is sampled and fetched in a background thread
        while the current one trains. DistDGL's RPC client is not thread-safe, so the loop
        body must not read a ``DistTensor`` meanwhile: pass ``labels`` (``g.ndata["label"]``)
        and the seeds' labels are read in that thread and appended too, ``(*item, x, y)``.
        ``device`` moves ``x``, ``y`` and the item's tensors and blocks there, in that thread.
        """
        target = torch.device(device) if device is not None else None

        def prepare(b: Batch) -> None:
            if labels is not None:
                b.extra = labels(b.item[1]) if callable(labels) else labels[b.item[1]]
            if target is not None:
                b.x = b.x.to(target)
                b.item = tuple(_move(v, target) for v in b.item)
                b.extra = _move(b.extra, target)

        for b in self.batches(loader, prepare=prepare, overlap=overlap, phase=phase):
            yield (*b.item, b.x) if labels is None else (*b.item, b.x, b.extra)

    def batches(
        self,
        loader: Iterable,
        *,
        prepare: Callable[[Batch], Batch | None] | None = None,
        overlap: bool = True,
        depth: int = 1,
        phase: str = "train",
    ) -> Iterator[Batch]:
        """One epoch of :class:`Batch` objects; ``prepare`` runs on each in the look-ahead.

        An evaluation pass (``phase="eval"``) goes through the same buffer and is accounted
        like training, but it is not an epoch: it adds no epoch record.
        """
        if not self.facts.minibatches_per_epoch:
            self.plan_run(_epoch_length(loader))  # the run's length: the agent's progress
        _phase_index(phase)
        self._start()
        epoch = self.results.begin_epoch(self.epoch)  # before the look-ahead starts fetching
        source = self._prepared(loader, prepare, phase)
        it: Iterator[Batch] = LookAhead(source, depth=depth) if overlap else source
        held: Batch | None = None
        returned_at = 0.0
        try:
            while True:
                t0 = time.perf_counter()
                if held is not None:  # the consumer is back: it trained the batch it held
                    self.note_compute(held.fetched.metrics.minibatch, t0 - returned_at)
                    self.results.step(held, t0 - returned_at)
                try:
                    b = next(it)
                except StopIteration:
                    break
                b.wait_s = time.perf_counter() - t0 if overlap else 0.0
                held, returned_at = b, time.perf_counter()
                yield b
        finally:
            if isinstance(it, LookAhead):
                it.close()
            if phase == "train":
                self.results.end_epoch(epoch)
                self.epoch += 1

    def _prepared(
        self, loader: Iterable, prepare: Callable[[Batch], Batch | None] | None, phase: str
    ) -> Iterator[Batch]:
        items = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            sample_s = time.perf_counter() - t0
            item = tuple(item)
            f = self.fetch(item[0], sample_s=sample_s, phase=phase)
            b = Batch(item=item, x=f.x, fetched=f, sample_s=sample_s)
            if prepare is not None:
                t1 = time.perf_counter()
                b = prepare(b) or b
                b.prepare_s = time.perf_counter() - t1
            yield b

    # -- life cycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        """Prefill the buffer and introduce the trainer to its agent, once, before minibatch 0."""
        if self._started:
            return
        self._started = True
        t0 = time.perf_counter()
        self.fetcher.prefill()
        self.results.prefill_s = time.perf_counter() - t0
        hello = getattr(self.channel, "hello", None)
        if hello is not None:
            hello(self.trainer_info())

    def trainer_info(self, minibatches_per_epoch: int = 0) -> TrainerInfo:
        """What this trainer tells its agent when it says hello."""
        f, cfg = self.facts, self.config
        per_epoch = minibatches_per_epoch or f.minibatches_per_epoch
        return TrainerInfo(
            graph=f.graph,
            num_nodes=f.num_nodes,
            num_edges=f.num_edges,
            num_parts=f.num_parts,
            part_id=f.part_id,
            local_nodes=f.owned[1] - f.owned[0],
            remote_nodes=f.remote_nodes,
            buffer_capacity=self.hook.policy.capacity,
            total_minibatches=per_epoch * cfg.epochs,
            minibatches_per_epoch=per_epoch,
            batch_size=cfg.batch_size,
            feat_dim=f.feat_dim,
        )

    def plan_run(self, minibatches_per_epoch: int) -> None:
        """Tell Rudder how long the run is (the agent avoids replacing near its end)."""
        self.facts = self.facts.with_minibatches(minibatches_per_epoch)
        self.accounting.total_minibatches = minibatches_per_epoch * self.config.epochs

    def summary(self) -> dict:
        """The trainer's results so far (what ``trainers/rank-R.json`` holds)."""
        return self.results.to_dict()

    def close(self, extra: dict | None = None) -> dict:
        """Say bye to the agent, write results, metrics and the trace; returns the results."""
        if self._closed:
            return self.results.to_dict()
        self._closed = True
        close = getattr(self.channel, "close", None)
        if close is not None:
            close()
        return self.results.write(extra or {})

    def __enter__(self) -> BufferedFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _phase_index(phase: str) -> int:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return PHASES.index(phase)


def _epoch_length(loader: Iterable) -> int:
    """Minibatches per epoch of ``loader`` (0 if it cannot say).

    DGL's ``DistDataLoader`` has no ``len()`` but knows its dataset and batch size.
    """
    if hasattr(loader, "__len__"):
        return len(loader)  # type: ignore[arg-type]
    dataset, batch = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    if dataset is None or not batch:
        return 0
    n = len(dataset)
    return n // batch if getattr(loader, "drop_last", False) else -(-n // batch)


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, list | tuple):
        return type(value)(_move(v, device) for v in value)
    to = getattr(value, "to", None)
    return to(device) if callable(to) and not isinstance(value, np.ndarray) else value
