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
from rudder.cli.graph_cmd import add_family_args, with_family

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="make and inspect access traces")
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)

    s = tsub.add_parser(
        "synth",
        help="record access traces of neighbour-sampled training on a generated graph",
        description="Generate a power-law graph (communities, or a ring with --family ring), "
        "partition it (community blocks, or a random owner per node), and record every "
        "trainer's remote accesses over E epochs of neighbour-sampled minibatches, ordered as "
        "the --scenario says (see 'Scenarios' in docs/traces.md). Seeded and deterministic.",
    )
    s.add_argument(
        "--out", required=True, type=Path, help="output directory (one file per trainer)"
    )
    add_graph_shape_args(s)
    add_family_args(s)
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
    _add_scenario_args(s)
    s.set_defaults(func=run_synth)

    i = tsub.add_parser(
        "info",
        help="summarise trace files; with --buffer, measure whether there is anything to steer",
        description="Summarise trace files. With --buffer F, also measure one trace's drift: "
        "how far the best fixed buffer of that size is from Belady's MIN, how much nearby and "
        "distant minibatches overlap, the overlap profile with its bursts, and a verdict "
        "(stationary, drifting or bursty; see docs/traces.md).",
    )
    i.add_argument("path", type=Path, nargs="?", help="a trace file or a directory of them")
    i.add_argument("--trace", type=Path, metavar="PATH", help="the same as PATH")
    i.add_argument("--rank", type=int, metavar="R", help="only the trace of trainer rank R")
    i.add_argument(
        "--buffer",
        type=fraction,
        metavar="F",
        help="measure drift at this buffer fraction, in [0, 1] (one trace: use --rank R with "
        "a directory of several)",
    )
    i.add_argument(
        "--window",
        type=positive_int,
        default=8,
        metavar="W",
        help="with --buffer: the overlap profile looks back W minibatches (default 8)",
    )
    i.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="OUT",
        help="write JSON (the summary rows; with --buffer, the drift report) to OUT, or print "
        "it instead of the text when OUT is omitted",
    )
    i.set_defaults(func=run_info)


# rudder.graphs.synth_traces' choices, without importing it (numba) to build the parser.
SCENARIOS = ("stationary", "locality", "eval", "temporal")
PARTITIONS = ("community", "random")
LOCALITY_ORDERS = ("sweep", "phases")


def _add_scenario_args(s: argparse.ArgumentParser) -> None:
    """How trainers order their minibatches (``SynthSpec``'s scenario and its knobs)."""
    g = s.add_argument_group("scenario", "how trainers order their work (docs/traces.md)")
    g.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="stationary",
        help="stationary: shuffle every epoch (default); locality: proximity-ordered "
        "minibatches; eval: evaluation passes every few epochs; temporal: a sliding window "
        "of node arrival times",
    )
    g.add_argument(
        "--partition",
        choices=PARTITIONS,
        default="community",
        help="community: whole-community id ranges (default); random: a random owner per node "
        "(ids renumbered part by part, as DistDGL does)",
    )
    g.add_argument(
        "--locality-order",
        choices=LOCALITY_ORDERS,
        default="sweep",
        help="locality: sweep by position from a random start each epoch (default), or "
        "phases: community by community in a random order, shuffled within",
    )
    g.add_argument(
        "--eval-every",
        type=positive_int,
        default=2,
        metavar="K",
        help="eval: an evaluation pass after every K-th epoch (default 2)",
    )
    g.add_argument(
        "--eval-fraction",
        type=fraction,
        default=0.2,
        metavar="F",
        help="eval: held-out nodes evaluated, as a fraction of the part's nodes (default 0.2)",
    )
    g.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=None,
        metavar="B",
        help="eval: seeds per evaluation minibatch (default 4 x --batch-size)",
    )
    g.add_argument(
        "--window",
        type=fraction,
        default=0.3,
        metavar="W",
        help="temporal: width of the arrival-time window, in (0, 1] (default 0.3)",
    )
    g.add_argument(
        "--window-step",
        type=fraction,
        default=0.1,
        metavar="S",
        help="temporal: how far the window slides each epoch, wrapping (default 0.1)",
    )


def _scenario_knobs(args: argparse.Namespace) -> dict:
    """``SynthSpec`` keywords from :func:`_add_scenario_args`; knobs of another scenario fail."""
    from rudder.cli.common import UserError

    defaults = {
        "locality_order": ("locality", "sweep"),
        "eval_every": ("eval", 2),
        "eval_fraction": ("eval", 0.2),
        "eval_batch_size": ("eval", None),
        "window": ("temporal", 0.3),
        "window_step": ("temporal", 0.1),
    }
    for key, (scenario, default) in defaults.items():
        if getattr(args, key) != default and args.scenario != scenario:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} applies to --scenario {scenario}, not {args.scenario}")
    if args.family != "ring" and args.locality_scale != 300.0:
        raise UserError("--locality-scale applies to --family ring only")
    return {
        "scenario": args.scenario,
        "partition": args.partition,
        "locality_order": args.locality_order,
        "eval_every": args.eval_every,
        "eval_fraction": args.eval_fraction,
        "eval_batch_size": args.eval_batch_size or 0,
        "window": args.window,
        "window_step": args.window_step,
    }


def run_synth(args: argparse.Namespace) -> int:
    from rudder.cli.common import progress
    from rudder.graphs.synth_traces import SynthSpec, synthesize, total_minibatches
    from rudder.graphs.synthetic import generate

    spec = SynthSpec(
        graph=with_family(graph_spec_from(args), args),
        **_scenario_knobs(args),
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
        "generating a %d-node %s graph (avg degree %g, %d communities); %s, %s partition",
        args.nodes,
        args.family,
        args.avg_degree,
        args.communities,
        args.scenario,
        args.partition,
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


def summary(path: Path, tr=None) -> dict:
    """A JSON-able summary of one trace file (``tr``: the trace, if already loaded)."""
    from rudder.trainer_hooks.trace import load_trace

    tr = tr if tr is not None else load_trace(path)
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


def _select(args: argparse.Namespace) -> list[tuple[Path, object]]:
    """The (path, trace) pairs ``info`` reports on: PATH or --trace, narrowed by --rank."""
    from rudder.cli.common import UserError
    from rudder.trainer_hooks.trace import find_traces, load_trace

    if args.path is not None and args.trace is not None and args.path != args.trace:
        raise UserError("give the trace either as PATH or as --trace, not both")
    where = args.trace if args.trace is not None else args.path
    if where is None:
        raise UserError("which trace? give a trace file or a directory (PATH or --trace PATH)")
    traces = [(p, load_trace(p)) for p in find_traces(where)]
    if args.rank is not None:
        ranks = sorted(tr.meta.trainer for _, tr in traces)
        traces = [(p, tr) for p, tr in traces if tr.meta.trainer == args.rank]
        if not traces:
            raise UserError(f"{where}: no trace of rank {args.rank} (ranks: {ranks})")
    return traces


def _drift_text(report) -> list[str]:
    """The drift report as lines of text, for a person."""
    from rudder.trainer_hooks.drift import sparkline

    r = report
    lags = ", ".join(
        f"i-{k}: {v:.3f}" if v == v else f"i-{k}: - (trace too short)"
        for k, v in r.lag_overlaps.items()
    )
    n = r.minibatches
    cols = min(60, n)
    per = f"{n / cols:.1f} minibatches per column" if cols < n else "one minibatch per column"
    lines = [
        f"drift at buffer {r.buffer_fraction:g} ({r.capacity:,} rows), window {r.window}:",
        f"  best fixed buffer fetches {r.gap:.2f}x Belady's rows "
        f"(best-static {r.best_static_rows:,}, belady {r.belady_rows:,})",
        f"  overlap of minibatch i with {lags}",
        f"  overlap profile (share of a minibatch's ids requested in the previous {r.window}): "
        f"mean {r.profile_mean:.3f}, p10 {r.profile_p10:.3f}, p90 {r.profile_p90:.3f}",
        f"  0 |{sparkline(r.profile, 60)}| 1   ({n:,} minibatches, {per})",
    ]
    if r.bursts:
        spans = ", ".join(
            f"{b.start}-{b.end} (min {b.min_overlap:.3f})" if b.length > 1 else str(b.start)
            for b in r.bursts
        )
        lines.append(
            f"  bursts (overlap below {r.burst_threshold:.3f} for >= 2 minibatches): {spans}"
        )
    else:
        lines.append(f"  bursts: none (no run of >= 2 minibatches below {r.burst_threshold:.3f})")
    lines.append(f"  verdict: {r.verdict} ({r.reason})")
    return lines


def run_info(args: argparse.Namespace) -> int:
    from rudder.cli.common import UserError, format_table

    traces = _select(args)
    rows = [summary(p, tr) for p, tr in traces]
    payload: object = rows
    report = None
    if args.buffer is not None:
        from rudder.trainer_hooks.drift import measure_drift

        if len(traces) > 1:
            ranks = [tr.meta.trainer for _, tr in traces]
            raise UserError(
                f"--buffer measures one trace, and this holds {len(traces)} (ranks {ranks}); "
                "pick one with --rank R"
            )
        path, tr = traces[0]
        report = measure_drift(tr, args.buffer, window=args.window)
        payload = {"file": str(path), **report.to_dict(include_profile=True)}
    if args.json == "-":
        print(json.dumps(payload, indent=2))
        return 0
    if args.json is not None:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
        log.info("wrote %s", out)
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
    if report is not None:
        print()
        print("\n".join(_drift_text(report)))
    return 0
