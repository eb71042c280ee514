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
from rudder.trainer_hooks.scenarios import sweep_order, time_window

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


class Loaders:
    """The minibatches of each epoch as the run's scenario orders them (``scenarios.py``)."""

    def __init__(self, cfg: WorkerConfig, g):
        from dgl.distributed import node_split

        self.cfg, self.g = cfg, g
        self.scenario = cfg.options.workload
        pb = g.get_partition_book()
        self.train_nids = _equal_share(node_split(g.ndata["train_mask"], pb, force_even=True))
        # DGL's distributed example evaluates with inference over all nodes, each trainer its
        # share: a burst of accesses unlike training (the scenario's point).
        self.eval_nids = (
            node_split(torch.ones(g.num_nodes(), dtype=torch.bool), pb, force_even=True)
            if self.scenario.name == "eval"
            else None
        )
        self._position = self._times = None
        if self.scenario.name == "locality":
            # The original id is the proximity key of a generated graph (ring position,
            # community): DistDGL's relabelling keeps it in orig_nids.npy.
            orig = np.load(cfg.orig_nids, mmap_mode="r", allow_pickle=False)
            self._position = np.asarray(orig[self.train_nids.numpy()])
        elif self.scenario.name == "temporal":
            if "time" not in g.ndata:
                raise ValueError(
                    "scenario temporal needs node arrival times (ndata 'time'): generate the "
                    "graph with `rudder graph generate` (it writes time.npy) and partition again"
                )
            self._times = g.ndata["time"][self.train_nids].numpy()
        self._shuffled = None

    @property
    def per_epoch(self) -> int:
        n = self.train_nids.shape[0]
        if self.scenario.name == "temporal":
            n = round(n * self.scenario.window)
        return -(-n // self.cfg.options.batch_size)

    def _loader(self, seeds: torch.Tensor, *, shuffle: bool, batch_size: int):
        import dgl

        sampler = dgl.dataloading.NeighborSampler(list(self.cfg.options.fanouts))
        return dgl.dataloading.DistNodeDataLoader(
            self.g, seeds, sampler, batch_size=batch_size, shuffle=shuffle, drop_last=False
        )

    def train(self, epoch: int):
        """The training loader of ``epoch``."""
        bs, s = self.cfg.options.batch_size, self.scenario
        if s.shuffled:
            if self._shuffled is None:  # one shuffling loader for the run, as DGL's examples
                self._shuffled = self._loader(self.train_nids, shuffle=True, batch_size=bs)
            return self._shuffled
        nids = self.train_nids.numpy()
        if s.name == "locality":
            seeds = sweep_order(nids, self._position, epoch, self.cfg.options.seed)
            return self._loader(torch.from_numpy(seeds), shuffle=False, batch_size=bs)
        seeds = torch.from_numpy(time_window(nids, self._times, epoch, s.window, s.window_step))
        return self._loader(_equal_share(seeds), shuffle=True, batch_size=bs)

    def evaluation(self):
        """The evaluation pass's loader (all of this trainer's nodes, 4x batches), or None."""
        if self.eval_nids is None:
            return None
        return self._loader(
            self.eval_nids, shuffle=False, batch_size=4 * self.cfg.options.batch_size
        )


def _labels_then_device(labels, device):
    def prepare(b: Batch) -> None:  # in the look-ahead thread, off the training path
        b.extra = labels[b.item[1]]
        if device is not None:
            b.item = (b.item[0], b.item[1], [blk.to(device) for blk in b.item[2]])
            b.x, b.extra = b.x.to(device), b.extra.to(device)

    return prepare


def _train_epoch(cfg, feats: BufferedFeatures, loader, labels, model, opt, device) -> float:
    """One epoch through the hook; returns the training accuracy."""
    prepare = _labels_then_device(labels, device)
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


def _evaluate(cfg, feats: BufferedFeatures, loader, labels, model, device) -> float:
    """An evaluation pass through the same buffer (no gradients, no DDP); its accuracy."""
    prepare = _labels_then_device(labels, device)
    module = model.module  # forward alone: no collective, trainers may differ in pass length
    module.eval()
    correct = seen = 0
    with torch.no_grad():
        for b in feats.batches(
            loader, prepare=prepare, overlap=cfg.options.use_overlap, phase="eval"
        ):
            logits = module(b.item[2], b.x)
            correct += int((logits.argmax(1) == b.extra).sum())
            seen += int(b.extra.shape[0])
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
    loaders = Loaders(cfg, g)
    per_epoch = loaders.per_epoch
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
    for epoch in range(cfg.options.epochs):
        labels = g.ndata["label"]
        acc = _train_epoch(cfg, feats, loaders.train(epoch), labels, model, opt, device)
        feats.results.epochs[-1]["train_acc"] = acc
        if loaders.scenario.evaluates_after(epoch):
            acc = _evaluate(cfg, feats, loaders.evaluation(), labels, model, device)
            feats.results.epochs[-1]["eval_acc"] = acc

    steps = feats.results.steps
    result = feats.close(  # says bye to the agent; writes results, metrics, trace
        {"startup_s": startup_s, "final_loss": steps[-1].get("loss") if steps else None}
    )
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return result
