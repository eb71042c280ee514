"""The built-in DistDGL trainer: GraphSAGE through Rudder's public hook.

It is a DistDGL training loop like any user's, and uses Rudder the way a user's script does:
:class:`~rudder.trainer_hooks.buffered.BufferedFeatures` over ``g.ndata["feat"]``, configured
from the environment ``rudder train`` sets, with the look-ahead that prepares minibatch
``i+1`` (sample, decide, fetch, labels, the move to the GPU) while ``i`` trains. With policy
``none`` and no overlap it is DistDGL's plain loop.
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from rudder.trainer_hooks.buffered import Batch, BufferedFeatures
from rudder.trainer_hooks.distdgl.config import WorkerConfig

log = logging.getLogger(__name__)


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


def _join_cluster(cfg: WorkerConfig, rank: int, device: torch.device | None):
    """DistDGL, then torch.distributed (in DGL's required order); the trainer's DistGraph."""
    import dgl
    from dgl.distributed import DistGraph

    dgl.distributed.initialize(cfg.ip_config)  # before torch.distributed, as DGL requires
    if device is not None:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(
        "nccl" if device is not None else "gloo",
        init_method=f"file://{Path(cfg.out_dir) / 'pg-store'}",  # absolute, fresh per run
        world_size=cfg.num_trainers,
        rank=rank,
        timeout=datetime.timedelta(seconds=cfg.dist_timeout_s),
    )
    return DistGraph(cfg.graph_name, part_config=cfg.part_config)


def _loader(cfg: WorkerConfig, g):
    import dgl
    from dgl.distributed import node_split

    pb = g.get_partition_book()
    train_nids = _equal_share(node_split(g.ndata["train_mask"], pb, force_even=True))
    sampler = dgl.dataloading.NeighborSampler(list(cfg.options.fanouts))
    loader = dgl.dataloading.DistNodeDataLoader(
        g, train_nids, sampler, batch_size=cfg.options.batch_size, shuffle=True, drop_last=False
    )
    return loader, -(-train_nids.shape[0] // cfg.options.batch_size)


def _train_epoch(cfg, feats: BufferedFeatures, loader, labels, model, opt, device) -> float:
    """One epoch through the hook; returns the training accuracy."""

    def prepare(b: Batch) -> None:  # in the look-ahead thread, off the training path
        b.extra = labels[b.item[1]]
        if device is not None:
            b.item = (b.item[0], b.item[1], [blk.to(device) for blk in b.item[2]])
            b.x, b.extra = b.x.to(device), b.extra.to(device)

    correct = seen = 0
    model.train()
    for b in feats.batches(loader, prepare=prepare, overlap=cfg.options.use_overlap):
        y = b.extra
        logits = model(b.item[2], b.x)
        loss = functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        b.step["loss"] = float(loss)
        correct += int((logits.argmax(1) == y).sum())
        seen += int(y.shape[0])
    return correct / max(seen, 1)


def train(cfg: WorkerConfig, rank: int) -> dict:
    """Run this trainer to the end; returns its result record (also written to disk)."""
    import dgl

    from rudder.trainer_hooks.distdgl.model import GraphSAGE

    torch.manual_seed(cfg.options.seed)
    dgl.seed(cfg.options.seed)
    np.random.seed(cfg.options.seed)
    torch.set_num_threads(cfg.options.threads_per_trainer)
    t_start = time.perf_counter()
    device = select_device(cfg, rank)
    g = _join_cluster(cfg, rank, device)
    startup_s = time.perf_counter() - t_start

    feats = BufferedFeatures.from_graph(g, "feat")  # the run's config, from the environment
    loader, per_epoch = _loader(cfg, g)
    feats.plan_run(per_epoch)
    model = GraphSAGE(
        cfg.feat_dim, cfg.options.hidden, cfg.num_classes, num_layers=len(cfg.options.fanouts)
    )
    if device is not None:
        model = model.to(device)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.options.lr)
    log.info(
        "trainer %d: partition %d, %d minibatches/epoch, policy %s (decider %s), buffer %d "
        "rows; start-up %.1f s",
        rank,
        feats.facts.part_id,
        per_epoch,
        feats.hook.policy.label,
        feats.decider_spec,
        feats.hook.policy.capacity,
        startup_s,
    )
    for _ in range(cfg.options.epochs):
        acc = _train_epoch(cfg, feats, loader, g.ndata["label"], model, opt, device)
        feats.results.epochs[-1]["train_acc"] = acc

    steps = feats.results.steps
    result = feats.close(  # says bye to the agent; writes results, metrics, trace
        {"startup_s": startup_s, "final_loss": steps[-1].get("loss") if steps else None}
    )
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return result
