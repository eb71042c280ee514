"""``rudder train`` and ``rudder compare``: distributed training runs and their comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from rudder.cli.common import (
    UserError,
    add_fill_free_arg,
    fraction,
    int_list,
    port_number,
    positive_float,
    positive_int,
)
from rudder.cli.prompt_cmd import add_llm_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run DistDGL training with a buffer policy",
        description="Train 2-layer GraphSAGE with DistDGL over partitions from `rudder graph "
        "partition`: one server and T trainers per machine, the Rudder hook in every trainer. "
        "On one host the machines are emulated (network namespaces when run as root, else "
        "loopback); with --ip-config they are real hosts reached over ssh.",
    )
    p.add_argument(
        "--partitions", required=True, type=Path, help="output of `rudder graph partition`"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run directory (summary.json, logs, metrics)"
    )
    p.add_argument("--machines", type=positive_int, default=2, help="one per partition")
    p.add_argument("--trainers", type=positive_int, default=1, help="trainers per machine")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.add_argument(
        "--fanouts", type=int_list, default=(10, 25), help="per layer, input layer first"
    )
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=3e-3, help="learning rate (Adam)")
    p.add_argument(
        "--policy",
        default="rudder",
        help="none, static, fixed, periodic[:P], lru, lfu, s3fifo, rudder",
    )
    p.add_argument(
        "--decider",
        default="heuristic",
        help="for --policy rudder: always, never, every:P, heuristic",
    )
    p.add_argument(
        "--agent",
        choices=("auto", "inproc", "sidecar"),
        default="auto",
        help="where --policy rudder decides: in the trainer, or one `rudder agent serve` per "
        "machine; auto: sidecars for llm and classifier:PATH, in process for rules",
    )
    p.add_argument(
        "--agent-mode",
        choices=("async", "sync"),
        default="async",
        help="async: training never waits (stale requests dropped); sync: it waits",
    )
    add_llm_args(p)
    p.add_argument(
        "--llm-threads",
        type=positive_int,
        default=None,
        help="threads of the LLM server the run starts (default: see docs/llm.md)",
    )
    p.add_argument(
        "--llm-nice",
        type=int,
        default=None,
        help="its CPU priority, 0..19, below training's (default: see docs/llm.md)",
    )
    p.add_argument("--checkpoint", help="agent sidecar: the agent's history database (SQLite)")
    p.add_argument(
        "--buffer",
        type=fraction,
        default=0.25,
        help="fraction of the partition's reachable remote nodes",
    )
    p.add_argument("--scoring", choices=("additive", "multiplicative"), default="additive")
    p.add_argument("--candidate-window", type=positive_int, default=1)
    add_fill_free_arg(p)
    overlap = p.add_mutually_exclusive_group()
    overlap.add_argument(
        "--overlap",
        dest="overlap",
        action="store_true",
        default=None,
        help="prepare minibatch i+1 while i trains (default for buffered policies)",
    )
    overlap.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="the plain DistDGL loop (default for --policy none)",
    )
    p.add_argument(
        "--cluster",
        choices=("auto", "netns", "loopback", "ssh"),
        default="auto",
        help="auto: network namespaces if root, else loopback; ssh: real hosts",
    )
    p.add_argument(
        "--bandwidth", help="shape every emulated machine's link, e.g. 1gbit (netns only)"
    )
    p.add_argument(
        "--ip-config",
        type=Path,
        help="real hosts, one 'IP [PORT]' per line (implies --cluster ssh)",
    )
    p.add_argument(
        "--ssh-config",
        type=Path,
        help="ssh: the ssh client's config file (ssh -F: users, keys, ports per host)",
    )
    p.add_argument("--port", type=port_number, default=30050)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a live bar: minibatches/s, epoch, %%-hits, rows per minibatch, decisions and "
        "their latency (default: on a terminal only)",
    )
    p.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="write per-trainer scalars under DIR/<--out's name>/ while the run trains "
        "(tensorboard --logdir DIR)",
    )
    run_limit = "wall-clock limit of the whole run, seconds"
    p.add_argument("--timeout", type=positive_float, default=1800.0, help=run_limit)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per trainer")
    p.add_argument("--record-trace", action="store_true", help="write access traces to OUT/trace")
    p.add_argument(
        "--verify-features",
        action="store_true",
        help="check every minibatch against a plain pull (slow)",
    )
    p.add_argument(
        "--scenario",
        choices=("stationary", "locality", "eval", "temporal"),
        default="stationary",
        help="the workload (docs/traces.md, Scenarios): stationary (shuffled minibatches), "
        "locality (proximity-ordered sweep: pair with a random partition), eval (evaluation "
        "passes every --eval-every epochs), temporal (a time window sliding each epoch; the "
        "graph needs node times)",
    )
    p.add_argument("--eval-every", type=positive_int, default=2, help="eval: epochs per pass")
    p.add_argument("--window", type=fraction, default=0.3, help="temporal: window width")
    p.add_argument("--window-step", type=fraction, default=0.1, help="temporal: window step")
    p.add_argument(
        "--script",
        type=Path,
        help="run this DistDGL training script in every trainer instead of the built-in "
        "GraphSAGE loop (it uses rudder.trainer_hooks.BufferedFeatures; docs/api.md); its "
        "arguments follow `--`, with {ip_config}, {part_config}, {graph_name}, {epochs}, "
        "{batch_size} and {out} filled in",
    )
    p.add_argument("script_args", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)

    c = sub.add_parser("compare", help="compare training runs side by side")
    c.add_argument(
        "runs", nargs="+", type=Path, help="run directories (the first is the reference)"
    )
    c.add_argument("--names", help="comma-separated labels for the runs")
    c.set_defaults(func=run_compare)


def run_train(args: argparse.Namespace) -> int:
    from rudder.launcher.train import TrainConfig, TrainingError, run
    from rudder.trainer_hooks.distdgl.config import TrainingOptions

    if args.script_args and args.script is None:
        raise UserError(f"unexpected arguments {args.script_args}: script arguments need --script")
    cluster = "ssh" if args.ip_config and args.cluster == "auto" else args.cluster
    options = TrainingOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        fanouts=args.fanouts,
        hidden=args.hidden,
        lr=args.lr,
        policy=args.policy,
        decider=args.decider,
        buffer_fraction=args.buffer,
        scoring=args.scoring,
        candidate_window=args.candidate_window,
        fill_free=args.fill_free,
        admission=args.admission,
        scenario=args.scenario,
        eval_every=args.eval_every,
        window=args.window,
        window_step=args.window_step,
        overlap=args.overlap,
        verify_features=args.verify_features,
        record_trace=args.record_trace,
        device=args.device,
        seed=args.seed,
        threads_per_trainer=args.threads,
        agent=args.agent,
        agent_mode=args.agent_mode,
    )
    agent_options = {
        k: v
        for k, v in {
            "llm_url": args.llm_url,
            "llm_model": args.llm_model,
            "prompt": args.prompt,
            "checkpoint": args.checkpoint,
        }.items()
        if v is not None
    }
    cfg = TrainConfig(
        partitions=args.partitions,
        out=args.out,
        machines=args.machines,
        trainers=args.trainers,
        options=options,
        cluster=cluster,
        bandwidth=args.bandwidth,
        ip_config=args.ip_config,
        port=args.port,
        timeout_s=args.timeout,
        agent_options=agent_options,
        script=args.script,
        script_args=tuple(a for a in args.script_args if a != "--"),
        ssh_config=args.ssh_config,
        progress=args.progress,
        tensorboard=args.tensorboard,
        **{
            k: v
            for k, v in {"llm_threads": args.llm_threads, "llm_nice": args.llm_nice}.items()
            if v is not None
        },
    )
    try:
        s = run(cfg)
    except TrainingError as e:
        print(f"rudder train: {e}")
        for p in e.report.failed():
            print(f"--- {p.name} ({p.describe_exit()}), last lines of {p.log_path}:\n{p.log_tail}")
        return 1
    print(
        f"{s['policy']} ({s['decider'] or '-'}), {s['machines']} machines x "
        f"{s['trainers_per_machine']} trainers, {s['cluster_mode']}: "
        f"epoch {s['epoch_time_s']:.2f} s, {s['rows_fetched_per_epoch']:,.0f} rows/epoch, "
        f"{100 * s['hit_rate']:.1f}% hits -> {args.out / 'summary.json'}"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from rudder.cli.common import format_table
    from rudder.launcher.summary import comparison_rows, load_summary

    names = args.names.split(",") if args.names else [p.name for p in args.runs]
    if len(names) != len(args.runs):
        raise UserError(f"--names has {len(names)} labels for {len(args.runs)} runs")
    summaries = [(n, load_summary(p)) for n, p in zip(names, args.runs, strict=True)]
    headers, rows = comparison_rows(summaries)
    print(format_table(headers, rows))
    return 0
