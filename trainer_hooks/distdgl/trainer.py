"""One DistDGL trainer with the Rudder hook: sample, fetch through the buffer, train.

Per minibatch the *preparer* samples the input nodes, asks the decision channel whether this
minibatch replaces, fetches features through :class:`BufferedFetcher` (buffer hits plus one
pull), pulls labels and accounts everything. With ``overlap`` it runs in a look-ahead thread, so
minibatch ``i+1`` is prepared while ``i`` trains; without, it is DistDGL's plain loop.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from rudder.protocol import TrainerInfo
from rudder.rules import make_decider
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig
from rudder.trainer_hooks.channel import DecisionChannel
from rudder.trainer_hooks.distdgl.config import WorkerConfig
from rudder.trainer_hooks.distdgl.fetcher import BufferedFetcher, Fetched
from rudder.trainer_hooks.distdgl.lookahead import LookAhead
from rudder.trainer_hooks.metrics import Accounting, Metrics, Totals
from rudder.trainer_hooks.policies import (
    PolicyContext,
    PolicySpec,
    ScoredOptions,
    builtin_decider,
    make_policy,
    warm_up,
)
from rudder.trainer_hooks.trace import AccessTrace, TraceMeta

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Prepared:
    """A minibatch ready to train on."""

    epoch: int
    blocks: list
    x: torch.Tensor
    y: torch.Tensor
    fetched: Fetched
    metrics: Metrics
    sample_s: float
    label_s: float


@dataclass(slots=True)
class StepLog:
    """Timings of one trained minibatch (what ``steps-rank-R.jsonl`` holds)."""

    minibatch: int
    epoch: int
    inputs: int
    remote: int
    hits: int
    rows_fetched: int
    replaced: int
    sample_s: float
    pull_s: float
    hook_s: float
    label_s: float
    wait_s: float  # main thread blocked on the preparer (all of prepare time without overlap)
    compute_s: float  # forward, backward, all-reduce, optimizer step
    loss: float


@dataclass(slots=True)
class Verification:
    """Features compared against a plain pull (``verify_features``)."""

    minibatches: int = 0
    mismatches: int = 0
    hits_checked: int = 0


@dataclass(slots=True)
class Recorder:
    """Collects the access trace of the run (``record_trace``)."""

    batches: list[np.ndarray] = field(default_factory=list)
    local_counts: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    fetch_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)


class Preparer:
    """Everything done for a minibatch before it trains."""

    def __init__(
        self,
        loader,
        fetcher: BufferedFetcher,
        labels,
        acct: Accounting,
        channel: DecisionChannel | AgentClient | None,
        verify_pull=None,
        device: torch.device | None = None,
    ):
        self.loader = loader
        self.device = (
            device  # a GPU: blocks, features and labels are moved here, off the main thread
        )
        self.fetcher = fetcher
        self.labels = labels
        self.acct = acct
        self.channel = channel
        self.verify_pull = verify_pull
        self.verification = Verification()
        self.last_compute_s = 0.0  # written by the training thread, read for metrics
        self.t = 0

    def epoch(self, epoch: int) -> Iterator[Prepared]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                input_nodes, seeds, blocks = next(it)
            except StopIteration:
                return
            sample_s = time.perf_counter() - t0
            replace = bool(self.channel.decision_for(self.t)) if self.channel else False
            fetched = self.fetcher.fetch(input_nodes, replace)
            t1 = time.perf_counter()
            y = self.labels[seeds]
            label_s = time.perf_counter() - t1
            policy = self.fetcher.policy
            metrics = self.acct.record(
                fetched.plan,
                epoch=epoch,
                local_inputs=fetched.n_local,
                buffer_fill=policy.buffer.size,
                stale_slots=policy.stale_count() if self.channel else 0,
                sample_s=sample_s,
                fetch_s=fetched.pull_s,
                compute_s=self.last_compute_s,
            )
            if self.channel:
                self.channel.offer(metrics)
            if self.verify_pull is not None:
                self._verify(input_nodes, fetched)
            self.t += 1
            x = fetched.x
            if self.device is not None:
                blocks = [b.to(self.device) for b in blocks]
                x, y = x.to(self.device), y.to(self.device)
            yield Prepared(epoch, blocks, x, y, fetched, metrics, sample_s, label_s)

    def _verify(self, input_nodes: torch.Tensor, fetched: Fetched) -> None:
        v = self.verification
        v.minibatches += 1
        v.hits_checked += fetched.plan.n_hits
        if not torch.equal(fetched.x, self.verify_pull(input_nodes)):
            v.mismatches += 1
            log.error("minibatch %d: features differ from a plain pull", self.t)


def _policy_for(cfg: WorkerConfig, part: int):
    info = cfg.parts[part]
    spec = PolicySpec.parse(cfg.options.policy)
    ranking = np.load(info.remote_ranking) if spec.name in ("static", "periodic") else None
    capacity = round(cfg.options.buffer_fraction * info.remote_node_count)
    options = ScoredOptions(
        scoring=cfg.options.scoring,
        candidate_window=cfg.options.candidate_window,
        fill_free=cfg.options.fill_free,
    )
    policy = make_policy(
        spec,
        capacity,
        PolicyContext(prefill_ranking=ranking),
        feat_dim=cfg.feat_dim,
        options=options,
    )
    decider_spec = (builtin_decider(spec) or cfg.options.decider) if policy.uses_decisions else None
    return policy, decider_spec


def _channel(
    cfg: WorkerConfig, rank: int, part: int, decider_spec: str | None, policy, per_epoch: int
) -> DecisionChannel | AgentClient | None:
    """Where this trainer's decisions come from: in process, or the machine's agent sidecar."""
    if decider_spec is None:
        return None
    endpoint = os.environ.get("RUDDER_AGENT_ENDPOINT")
    if not endpoint or decider_spec != cfg.options.decider:  # fixed/periodic/static: built in
        return DecisionChannel(make_decider(decider_spec), latency=1)
    client = AgentClient(
        ClientConfig(
            endpoint=endpoint,
            trainer=rank,
            run_id=os.environ.get("RUDDER_RUN_ID", ""),
            mode=cfg.options.agent_mode,
        )
    )
    info = cfg.parts[part]
    client.hello(
        TrainerInfo(
            graph=cfg.graph_name,
            num_nodes=cfg.num_nodes,
            num_edges=cfg.num_edges,
            num_parts=cfg.num_machines,
            part_id=part,
            local_nodes=info.node_range[1] - info.node_range[0],
            remote_nodes=info.remote_node_count,
            buffer_capacity=policy.capacity,
            total_minibatches=per_epoch * cfg.options.epochs,
            minibatches_per_epoch=per_epoch,
            batch_size=cfg.options.batch_size,
            feat_dim=cfg.feat_dim,
        )
    )
    return client


def select_device(cfg: WorkerConfig, rank: int) -> torch.device | None:
    """The trainer's GPU (one per trainer, by its index on the machine), or None on CPU."""
    if cfg.options.device == "cpu":
        return None
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device on this machine")
    local = rank % cfg.trainers_per_machine
    return torch.device("cuda", local % torch.cuda.device_count())


def _equal_share(train_nids: torch.Tensor) -> torch.Tensor:
    # DDP needs the same number of minibatches everywhere; node_split can differ by one node.
    n = torch.tensor([train_nids.shape[0]])
    torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
    return train_nids[: int(n)]


def train(cfg: WorkerConfig, rank: int) -> dict:
    """Run this trainer to the end; returns its result record (also written to disk)."""
    import dgl
    from dgl.distributed import DistGraph, node_split

    from rudder.trainer_hooks.distdgl.model import GraphSAGE

    torch.manual_seed(cfg.options.seed)
    dgl.seed(cfg.options.seed)
    np.random.seed(cfg.options.seed)
    torch.set_num_threads(cfg.options.threads_per_trainer)
    out = Path(cfg.out_dir)

    t_start = time.perf_counter()
    dgl.distributed.initialize(cfg.ip_config)  # before torch.distributed, as DGL requires
    device = select_device(cfg, rank)
    if device is not None:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(
        "nccl" if device is not None else "gloo",
        init_method=f"file://{out / 'pg-store'}",  # absolute, fresh per run (see docs)
        world_size=cfg.num_trainers,
        rank=rank,
        timeout=datetime.timedelta(seconds=cfg.dist_timeout_s),
    )
    g = DistGraph(cfg.graph_name, part_config=cfg.part_config)
    pb = g.get_partition_book()
    part = int(pb.partid)
    startup_s = time.perf_counter() - t_start

    policy, decider_spec = _policy_for(cfg, part)
    warm_up(cfg.options.policy, feat_dim=cfg.feat_dim)
    feat = g.ndata["feat"]
    fetcher = BufferedFetcher(policy, pull=lambda ids: feat[ids], owned=cfg.parts[part].node_range)
    t0 = time.perf_counter()
    pre = fetcher.prefill()
    prefill_s = time.perf_counter() - t0

    train_nids = _equal_share(node_split(g.ndata["train_mask"], pb, force_even=True))
    sampler = dgl.dataloading.NeighborSampler(list(cfg.options.fanouts))
    loader = dgl.dataloading.DistNodeDataLoader(
        g, train_nids, sampler, batch_size=cfg.options.batch_size, shuffle=True, drop_last=False
    )
    per_epoch = -(-train_nids.shape[0] // cfg.options.batch_size)
    acct = Accounting(
        trainer=rank,
        capacity=policy.capacity,
        row_bytes=cfg.feat_dim * 4,
        total_minibatches=per_epoch * cfg.options.epochs,
    )
    if pre is not None:
        acct.record_prefill(pre)
    channel = _channel(cfg, rank, part, decider_spec, policy, per_epoch)
    preparer = Preparer(
        loader,
        fetcher,
        g.ndata["label"],
        acct,
        channel,
        verify_pull=(lambda ids: feat[ids]) if cfg.options.verify_features else None,
        device=device,
    )

    model = GraphSAGE(
        cfg.feat_dim, cfg.options.hidden, cfg.num_classes, num_layers=len(cfg.options.fanouts)
    )
    if device is not None:
        model = model.to(device)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.options.lr)

    steps: list[StepLog] = []
    metrics: list[Metrics] = []
    recorder = Recorder() if cfg.options.record_trace else None
    epochs = []
    log.info(
        "trainer %d: partition %d, %d train nodes, %d minibatches/epoch, policy %s "
        "(decider %s), buffer %d rows; start-up %.1f s",
        rank,
        part,
        train_nids.shape[0],
        per_epoch,
        policy.label,
        decider_spec,
        policy.capacity,
        startup_s,
    )
    for epoch in range(cfg.options.epochs):
        before = Totals(**asdict(acct.totals))
        t_epoch = time.perf_counter()
        correct = seen = 0
        source = preparer.epoch(epoch)
        batches = LookAhead(source) if cfg.options.use_overlap else source
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    p = next(batches)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                model.train()
                logits = model(p.blocks, p.x)
                loss = functional.cross_entropy(logits, p.y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                t2 = time.perf_counter()
                preparer.last_compute_s = t2 - t1
                correct += int((logits.argmax(1) == p.y).sum())
                seen += int(p.y.shape[0])
                f = p.fetched
                steps.append(
                    StepLog(
                        minibatch=p.metrics.minibatch,
                        epoch=epoch,
                        inputs=int(p.x.shape[0]),
                        remote=f.plan.n_requested,
                        hits=f.plan.n_hits,
                        rows_fetched=f.plan.n_fetched,
                        replaced=p.metrics.replaced,
                        sample_s=p.sample_s,
                        pull_s=f.pull_s,
                        hook_s=f.hook_s,
                        label_s=p.label_s,
                        wait_s=t1 - t0,
                        compute_s=t2 - t1,
                        loss=float(loss),
                    )
                )
                metrics.append(p.metrics)
                if recorder is not None:
                    recorder.batches.append(f.remote_ids)
                    recorder.local_counts.append(f.n_local)
                    recorder.epochs.append(epoch)
                    recorder.sample_s.append(p.sample_s)
                    recorder.fetch_s.append(f.pull_s)
                    recorder.compute_s.append(t2 - t1)
        finally:
            if isinstance(batches, LookAhead):
                batches.close()
        dt = time.perf_counter() - t_epoch
        now = acct.totals
        epochs.append(
            {
                "epoch": epoch,
                "time_s": dt,
                "minibatches": now.minibatches - before.minibatches,
                "remote_inputs": now.remote_inputs - before.remote_inputs,
                "hits": now.hits - before.hits,
                "rows_fetched": now.rows_fetched - before.rows_fetched,
                "bytes_fetched": now.bytes_fetched - before.bytes_fetched,
                "train_acc": correct / max(seen, 1),
            }
        )
        log.info(
            "trainer %d epoch %d/%d: %.2f s, %.1f%% hits, %d rows fetched, train acc %.3f",
            rank,
            epoch + 1,
            cfg.options.epochs,
            dt,
            100 * epochs[-1]["hits"] / max(epochs[-1]["remote_inputs"], 1),
            epochs[-1]["rows_fetched"],
            epochs[-1]["train_acc"],
        )

    if isinstance(channel, AgentClient):
        channel.close()  # says bye; the look-ahead thread that used it has been joined
    torch.distributed.barrier()
    result = {
        "rank": rank,
        "part": part,
        "policy": policy.label,
        "decider": decider_spec,
        "capacity": policy.capacity,
        "remote_node_count": cfg.parts[part].remote_node_count,
        "startup_s": startup_s,
        "prefill_s": prefill_s,
        "epochs": epochs,
        "totals": asdict(acct.totals),
        "hit_rate": acct.totals.hit_rate,
        "time_s": {
            k: float(sum(getattr(s, k) for s in steps))
            for k in ("sample_s", "pull_s", "hook_s", "label_s", "wait_s", "compute_s")
        },
        "decisions": len(channel.applied) if channel else 0,
        "replace_decisions": sum(bool(d) for _, d in channel.applied) if channel else 0,
        "replacement_interval": channel.replacement_interval() if channel else None,
        "agent": channel.counters() if isinstance(channel, AgentClient) else None,
        "verification": asdict(preparer.verification) if cfg.options.verify_features else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final_loss": steps[-1].loss if steps else None,
    }
    _write_outputs(cfg, rank, part, result, steps, metrics, recorder)
    torch.distributed.destroy_process_group()
    return result


def _json(value: object) -> object:
    """json.dumps fallback for numpy scalars and tensors' items."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _write_outputs(
    cfg: WorkerConfig,
    rank: int,
    part: int,
    result: dict,
    steps: list[StepLog],
    metrics: list[Metrics],
    recorder: Recorder | None,
) -> None:
    out = Path(cfg.out_dir)
    (out / "trainers").mkdir(parents=True, exist_ok=True)
    (out / "trainers" / f"rank-{rank}.json").write_text(
        json.dumps(result, indent=2, default=_json) + "\n"
    )
    with open(out / "trainers" / f"steps-rank-{rank}.jsonl", "w") as f:
        for s in steps:
            f.write(json.dumps(asdict(s), default=_json) + "\n")
    with open(out / "trainers" / f"metrics-rank-{rank}.jsonl", "w") as f:
        for m in metrics:
            f.write(json.dumps(m.to_dict(), default=_json) + "\n")
    if recorder is None:
        return
    info = cfg.parts[part]
    meta = TraceMeta(
        graph=cfg.graph_name,
        num_nodes=cfg.num_nodes,
        num_edges=cfg.num_edges,
        num_parts=cfg.num_machines,
        part_id=part,
        trainer=rank,
        local_nodes=info.node_range[1] - info.node_range[0],
        remote_node_count=info.remote_node_count,
        fanouts=cfg.options.fanouts,
        batch_size=cfg.options.batch_size,
        feat_dim=cfg.feat_dim,
        epochs=cfg.options.epochs,
        source="distdgl",
        timings="measured",
        seed=cfg.options.seed,
        extra={"policy": cfg.options.policy, "trainers_per_machine": cfg.trainers_per_machine},
    )
    trace = AccessTrace.build(
        meta,
        recorder.batches,
        local_counts=np.array(recorder.local_counts),
        epochs=np.array(recorder.epochs),
        sample_s=np.array(recorder.sample_s),
        fetch_s=np.array(recorder.fetch_s),
        compute_s=np.array(recorder.compute_s),
        prefill_ranking=np.load(info.remote_ranking),
    )
    trace.save(out / "trace" / f"rank-{rank}.npz")
