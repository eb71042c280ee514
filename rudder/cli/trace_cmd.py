"""``rudder trace``: make and inspect access traces."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rudder.cli.common import (
    add_graph_shape_args,
    fraction,
    graph_spec_from,
    int_list,
    positive_int,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="make and inspect access traces")
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)

    s = tsub.add_parser(
        "synth",
        help="record access traces of neighbour-sampled training on a generated graph",
        description="Generate a power-law graph with community structure, partition it into "
        "community blocks, and record every trainer's remote accesses over E epochs of "
        "neighbour-sampled minibatches. Seeded and deterministic.",
    )
    s.add_argument(
        "--out", required=True, type=Path, help="output directory (one file per trainer)"
    )
    add_graph_shape_args(s)
    s.add_argument("--parts", type=positive_int, default=2)
    s.add_argument("--trainers-per-part", type=positive_int, default=1)
    s.add_argument("--epochs", type=positive_int, default=10)
    s.add_argument("--batch-size", type=positive_int, default=1000)
    s.add_argument(
        "--fanouts", type=int_list, default=(10, 25), help="per layer, input layer first"
    )
    s.add_argument("--train-fraction", type=fraction, default=0.1)
    s.add_argument("--feat-dim", type=positive_int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=run_synth)

    i = tsub.add_parser("info", help="summarise trace files")
    i.add_argument("path", type=Path, help="a trace file or a directory of them")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(func=run_info)


def run_synth(args: argparse.Namespace) -> int:
    from rudder.cli.common import progress
    from rudder.graphs.synth_traces import SynthSpec, synthesize, total_minibatches
    from rudder.graphs.synthetic import generate

    spec = SynthSpec(
        graph=graph_spec_from(args),
        parts=args.parts,
        trainers_per_part=args.trainers_per_part,
        epochs=args.epochs,
        batch_size=args.batch_size,
        fanouts=args.fanouts,
        train_fraction=args.train_fraction,
        feat_dim=args.feat_dim,
        seed=args.seed,
    )
    log.info(
        "generating a %d-node graph (avg degree %g, %d communities)",
        args.nodes,
        args.avg_degree,
        args.communities,
    )
    graph = generate(spec.graph)
    log.info("graph: %d nodes, %d directed edges", graph.num_nodes, graph.num_edges)
    with progress(total_minibatches(spec, graph), "sampling") as bar:
        traces = synthesize(spec, graph, on_minibatch=lambda: bar.update(1))
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("rank-*.npz"):
        old.unlink()  # a directory holds one run's traces, never a mix
    for tr in traces:
        path = tr.save(args.out / f"rank-{tr.meta.trainer}.npz")
        log.info(
            "wrote %s: %d minibatches, %d remote ids (%.1f%% of inputs), %d reachable remote nodes",
            path,
            tr.num_minibatches,
            tr.ids.shape[0],
            100 * tr.ids.shape[0] / max(1, tr.ids.shape[0] + int(tr.local_counts.sum())),
            tr.meta.remote_node_count,
        )
    return 0


def summary(path: Path) -> dict:
    """A JSON-able summary of one trace file."""
    from rudder.trainer_hooks.trace import load_trace

    tr = load_trace(path)
    remote = tr.ids.shape[0]
    local = int(tr.local_counts.sum())
    return {
        "file": str(path),
        "trainer": tr.meta.trainer,
        "part": tr.meta.part_id,
        "graph": tr.meta.graph,
        "source": tr.meta.source,
        "minibatches": tr.num_minibatches,
        "epochs": tr.meta.epochs,
        "remote_ids": remote,
        "remote_pct": 100.0 * remote / max(1, remote + local),
        "distinct_remote": tr.distinct_ids(),
        "remote_node_count": tr.meta.remote_node_count,
        "bytes_per_id": path.stat().st_size / max(1, remote),
    }


def run_info(args: argparse.Namespace) -> int:
    from rudder.cli.common import format_table
    from rudder.trainer_hooks.trace import find_traces

    rows = [summary(p) for p in find_traces(args.path)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    keys = [
        "trainer",
        "part",
        "minibatches",
        "remote_ids",
        "remote_pct",
        "distinct_remote",
        "remote_node_count",
        "bytes_per_id",
    ]
    print(f"{rows[0]['graph']} ({rows[0]['source']})")
    print(format_table(keys, [[r[k] for k in keys] for r in rows]))
    return 0
