"""GraphSAGE node classification on DistDGL, in the style of DGL's own example.

DGL's ``examples/distributed/graphsage/node_classification.py``: its own model, sampler, loop
and arguments. ``node_classification.py`` runs it with Rudder's persistent feature buffer;
``node_classification_plain.py`` is the same script without Rudder. The lines marked
``# Rudder`` are the only difference (``tests/unit/test_example_diff.py`` keeps it that way).

Launch it the way DistDGL scripts are launched (DGL's ``tools/launch.py``, which sets
``DGL_ROLE``, ``DGL_IP_CONFIG``, ``DGL_CONF_PATH`` and torch.distributed's variables), or with
``rudder train --script`` (docs/api.md).
"""

import argparse
import itertools
import json
import os
import time

import dgl
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from dgl.nn.pytorch import SAGEConv
from torch import nn


class DistSAGE(nn.Module):
    """A GraphSAGE model over the sampled blocks (mean aggregation)."""

    def __init__(self, in_feats, n_hidden, n_classes, n_layers):
        super().__init__()
        dims = [in_feats] + [n_hidden] * (n_layers - 1) + [n_classes]
        self.layers = nn.ModuleList(SAGEConv(a, b, "mean") for a, b in itertools.pairwise(dims))

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks, strict=True)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = F.relu(h)
        return h


def run(args, g):
    train_nid = dgl.distributed.node_split(g.ndata["train_mask"], g.get_partition_book())
    sampler = dgl.dataloading.NeighborSampler([int(f) for f in args.fan_out.split(",")])
    dataloader = dgl.dataloading.DistNodeDataLoader(
        g, train_nid, sampler, batch_size=args.batch_size, shuffle=True, drop_last=False
    )
    n_classes = int(g.ndata["label"][torch.arange(g.num_nodes())].max()) + 1
    model = DistSAGE(g.ndata["feat"].shape[1], args.num_hidden, n_classes, args.num_layers)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    for epoch in range(args.num_epochs):
        tic = time.time()
        correct = seen = 0
        with model.join():
            for step, (input_nodes, seeds, blocks) in enumerate(dataloader):
                batch_inputs, batch_labels = g.ndata["feat"][input_nodes], g.ndata["label"][seeds]
                batch_pred = model(blocks, batch_inputs)
                loss = F.cross_entropy(batch_pred, batch_labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int((batch_pred.argmax(1) == batch_labels).sum())
                seen += len(seeds)
                if step % args.log_every == 0:
                    print(f"rank {g.rank()} epoch {epoch} step {step}: loss {loss.item():.4f}")
        print(
            f"rank {g.rank()} epoch {epoch}: {time.time() - tic:.2f} s, "
            f"train acc {correct / max(seen, 1):.4f}"
        )


def main():
    parser = argparse.ArgumentParser(description="Distributed GraphSAGE")
    parser.add_argument("--graph_name", help="default: read from the partition config")
    parser.add_argument("--ip_config", default=os.environ.get("DGL_IP_CONFIG"))
    parser.add_argument("--part_config", default=os.environ.get("DGL_CONF_PATH"))
    parser.add_argument("--num_epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--fan_out", default="10,25")
    parser.add_argument("--num_hidden", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--log_every", type=int, default=20)
    args = parser.parse_args()
    if args.graph_name is None:
        with open(args.part_config) as f:
            args.graph_name = json.load(f)["graph_name"]

    dgl.distributed.initialize(args.ip_config)  # a server serves here and exits
    torch.distributed.init_process_group("gloo")
    g = dgl.distributed.DistGraph(args.graph_name, part_config=args.part_config)
    run(args, g)


if __name__ == "__main__":
    main()
