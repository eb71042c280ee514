"""``rudder graph``: generate, import, partition and inspect graphs."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from rudder.cli.common import (
    UserError,
    add_graph_shape_args,
    fraction,
    graph_spec_from,
    positive_float,
    positive_int,
    progress,
)

log = logging.getLogger(__name__)

OGB_NAMES = ("ogbn-arxiv", "ogbn-products", "ogbn-papers100M")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="generate, import and partition graphs")
    gsub = p.add_subparsers(dest="graph_command", metavar="SUBCOMMAND", required=True)

    g = gsub.add_parser(
        "generate",
        help="generate a node-classification graph (power-law, communities, features)",
        description="Generate a degree-corrected stochastic block model graph (or, with "
        "--family ring, a spatial graph whose edges join nodes near each other on a ring) with "
        "labels that follow the communities, features that carry the labels (class centroid + "
        "Gaussian noise), random train/val/test masks and node arrival times, into a graph "
        "directory. Seeded and deterministic; scales to 10^7 nodes.",
    )
    g.add_argument("--out", required=True, type=Path, help="graph directory to write")
    add_graph_shape_args(g)
    add_family_args(g)
    _add_feature_args(g)
    g.add_argument("--name", default="", help="graph name (default: from the parameters)")
    g.set_defaults(func=run_generate)

    i = gsub.add_parser(
        "import",
        help="convert a dataset already on disk (OGB, SNAP) into a graph directory",
        description="Read a dataset you downloaded; nothing is fetched from the network.",
    )
    isub = i.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    o = isub.add_parser(
        "ogb",
        help="an OGB node-property dataset in its raw layout",
        description="Read ROOT/<name with _>/raw/ and ROOT/<name with _>/split/ as OGB unpacks "
        "them (ROOT may also be the dataset directory itself). Unlabelled nodes get label 0 and "
        "are in no mask.",
    )
    o.add_argument("--name", required=True, choices=OGB_NAMES)
    o.add_argument("--root", required=True, type=Path, help="where the dataset was unpacked")
    o.add_argument("--out", required=True, type=Path, help="graph directory to write")
    o.set_defaults(func=run_import_ogb)
    s = isub.add_parser(
        "snap",
        help="a SNAP edge list (com-orkut, com-friendster, ...)",
        description="Read a SNAP edge list ('#' comments, whitespace-separated pairs, plain or "
        ".gz); ids are relabelled to 0..N-1 in increasing order. Labels: the --classes largest "
        "communities of --communities FILE, other nodes by degree bucket (all nodes by degree "
        "bucket without it). Features are generated to carry the labels.",
    )
    s.add_argument("--edges", required=True, type=Path, help="e.g. com-orkut.ungraph.txt.gz")
    s.add_argument("--communities", type=Path, help="e.g. com-orkut.top5000.cmty.txt.gz")
    s.add_argument("--out", required=True, type=Path, help="graph directory to write")
    _add_feature_args(s)
    s.add_argument("--name", default="", help="graph name (default: from the edge file name)")
    s.set_defaults(func=run_import_snap)

    pp = gsub.add_parser(
        "partition",
        help="partition a graph with DistDGL and rank each partition's remote nodes",
        description="Partition a graph directory with dgl.distributed.partition_graph (METIS "
        "balances training nodes and edges) and write Rudder's sidecar: for each partition, "
        "its remote nodes within --hops hops of its training nodes, by decreasing degree.",
    )
    pp.add_argument("--graph", required=True, type=Path, help="graph directory to read")
    pp.add_argument("--parts", required=True, type=positive_int)
    pp.add_argument("--method", choices=("metis", "random"), default="metis")
    pp.add_argument("--out", required=True, type=Path, help="partition directory to write")
    pp.add_argument(
        "--hops", type=positive_int, default=2, help="GNN layers: the reach of a minibatch"
    )
    pp.add_argument("--name", default="", help="DistDGL graph name (default: the graph's)")
    pp.set_defaults(func=run_partition)

    info = gsub.add_parser("info", help="summarise a graph or partition directory")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=run_info)


FAMILIES = ("dcsbm", "ring")  # rudder.graphs.synthetic.FAMILIES, without importing numba


def add_family_args(p: argparse.ArgumentParser) -> None:
    """--family and --locality-scale: which generator makes the graph's structure."""
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="dcsbm",
        help="dcsbm: communities joined by weight (default); ring: nodes on a ring in id "
        "order, each edge joining nodes a Laplace-distributed id offset apart",
    )
    p.add_argument(
        "--locality-scale",
        type=positive_float,
        default=300.0,
        metavar="S",
        help="ring: scale of an edge's id offset, in ids (default 300)",
    )


def with_family(spec, args: argparse.Namespace):
    """``spec`` (a :class:`GraphSpec`) with :func:`add_family_args`'s choices."""
    import dataclasses

    return dataclasses.replace(spec, family=args.family, locality_scale=args.locality_scale)


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feat-dim", type=positive_int, default=100)
    p.add_argument("--classes", type=positive_int, default=16)
    p.add_argument(
        "--feat-noise",
        type=float,
        default=1.0,
        help="noise std per feature; class centroids have norm ~1 (default 1.0)",
    )
    p.add_argument("--train-fraction", type=fraction, default=0.1)
    p.add_argument("--val-fraction", type=fraction, default=0.05)
    p.add_argument("--test-fraction", type=fraction, default=0.1)
    p.add_argument("--seed", type=int, default=0)


class _Bars:
    """Progress bars for the library's ``on_progress(stage, done, total)``, one per stage."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = progress(total or None, stage, unit="", unit_scale=True)
        if total and self._bar.total != total:  # a stage may find more work as it goes
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary(data, seconds: float) -> str:
    return (
        f"wrote {data.name}: {data.num_nodes:,} nodes, {data.num_edges // 2:,} undirected edges, "
        f"{data.feat_dim} features, {data.num_classes} classes, "
        f"{int(data.train_mask.sum()):,}/{int(data.val_mask.sum()):,}/"
        f"{int(data.test_mask.sum()):,} train/val/test nodes ({seconds:.1f} s)"
    )


def _write_graph(write) -> int:
    """Run ``write(progress_bars)`` (it writes a graph directory) and print what it wrote."""
    t0 = time.perf_counter()
    with _Bars() as bars:
        data = write(bars)
    print(_summary(data, time.perf_counter() - t0))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from rudder.graphs.features import DatasetSpec, write_dataset

    spec = DatasetSpec(
        graph=with_family(graph_spec_from(args), args),
        feat_dim=args.feat_dim,
        classes=args.classes,
        feat_noise=args.feat_noise,
        train_fraction=args.train_fraction,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        name=args.name,
    )
    log.info(
        "generating %s (%s): %d nodes, avg degree %g, %d communities -> %s",
        spec.dataset_name,
        args.family,
        args.nodes,
        args.avg_degree,
        args.communities,
        args.out,
    )
    return _write_graph(lambda bars: write_dataset(spec, args.out, on_progress=bars))


def run_import_ogb(args: argparse.Namespace) -> int:
    from rudder.graphs.readers import import_ogb

    return _write_graph(lambda bars: import_ogb(args.name, args.root, args.out, on_progress=bars))


def run_import_snap(args: argparse.Namespace) -> int:
    from rudder.graphs.readers import SnapSpec, import_snap

    spec = SnapSpec(
        edges=args.edges,
        communities=args.communities,
        feat_dim=args.feat_dim,
        classes=args.classes,
        feat_noise=args.feat_noise,
        train_fraction=args.train_fraction,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        name=args.name,
    )
    return _write_graph(lambda bars: import_snap(spec, args.out, on_progress=bars))


def run_partition(args: argparse.Namespace) -> int:
    from rudder.graphs.partitioned import partition
    from rudder.graphs.store import load_graph

    if args.out.resolve() == args.graph.resolve():
        raise UserError("--out must differ from --graph: partitions go in their own directory")
    data = load_graph(args.graph)
    t0 = time.perf_counter()
    with _Bars() as bars:
        pset = partition(
            data,
            args.out,
            parts=args.parts,
            method=args.method,
            hops=args.hops,
            graph_name=args.name,
            on_progress=bars,
        )
    print(
        f"partitioned {data.name} into {pset.num_parts} parts ({pset.method}) in "
        f"{time.perf_counter() - t0:.1f} s; DistDGL config: {pset.config}"
    )
    print(_partition_table(pset))
    return 0


def _partition_table(pset) -> str:
    from rudder.cli.common import format_table

    rows = [
        [
            p.part,
            f"{p.node_range[0]}-{p.node_range[1]}",
            p.local_nodes,
            p.train_nodes,
            p.remote_node_count,
            100.0 * p.remote_node_count / max(1, pset.num_nodes - p.local_nodes),
        ]
        for p in pset.partitions
    ]
    headers = ["part", "node_range", "local", "train", "remote_reachable", "pct_of_remote"]
    return format_table(headers, rows)


def run_info(args: argparse.Namespace) -> int:
    from rudder.graphs.partitioned import SIDECAR, load_partitions
    from rudder.graphs.store import load_graph

    path: Path = args.path
    if (path / SIDECAR).is_file() or path.name == SIDECAR:
        pset = load_partitions(path)
        if args.json:
            print(json.dumps(pset.to_json(), indent=2))
            return 0
        print(
            f"{pset.graph}: {pset.num_nodes:,} nodes, {pset.num_edges:,} directed edges, "
            f"{pset.num_parts} parts ({pset.method}), hops {pset.hops}; config {pset.config}"
        )
        print(_partition_table(pset))
        return 0
    data = load_graph(path)
    if args.json:
        print(json.dumps(data.meta(), indent=2))
        return 0
    deg = data.degrees()
    print(
        f"{data.name} ({data.source}): {data.num_nodes:,} nodes, {data.num_edges // 2:,} "
        f"undirected edges (degree mean {deg.mean():.1f}, max {deg.max():,}), "
        f"{data.feat_dim} features, {data.num_classes} classes, "
        f"{int(data.train_mask.sum()):,}/{int(data.val_mask.sum()):,}/"
        f"{int(data.test_mask.sum()):,} train/val/test"
    )
    return 0
