"""``rudder replay``: run policies and deciders over a recorded access trace."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

from rudder.cli.common import UserError, add_fill_free_arg, fraction, positive_int
from rudder.cli.prompt_cmd import add_llm_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay buffer policies over an access trace",
        description="Run replacement policies over one trainer's access trace and report rows "
        "fetched, hits and replacements. Offline bounds (best-static, belady, infinite) come "
        "with the trace's future; `--policy all` also prints each policy's rows relative to "
        "belady's.",
    )
    p.add_argument("--trace", required=True, type=Path, help="a trace file, or a directory of them")
    p.add_argument(
        "--rank",
        type=int,
        default=None,
        help="trainer rank when --trace is a directory (default: the first)",
    )
    p.add_argument(
        "--policy",
        default="all",
        help="a policy, a comma-separated list, or 'all' "
        "(none, static, fixed, periodic[:P], lru, lfu, s3fifo, rudder, best-static, belady, "
        "infinite)",
    )
    p.add_argument(
        "--buffer",
        type=fraction,
        required=True,
        help="buffer capacity as a fraction of the partition's reachable remote nodes",
    )
    p.add_argument(
        "--decider",
        default="heuristic",
        help="decider of the rudder policy: always, never, every:P, heuristic, or the agent: "
        "llm, classifier:PATH (decisions land after their measured latency, in the trace's time)",
    )
    p.add_argument(
        "--latency",
        type=positive_int,
        default=1,
        help="minibatches before a decision takes effect; requests made meanwhile are "
        "dropped (1 = synchronous)",
    )
    p.add_argument(
        "--agent-sync",
        action="store_true",
        help="llm / classifier deciders: each decision lands after --latency minibatches, as if "
        "the trainer waited for it (rudder train --agent-mode sync), not after its measured time",
    )
    p.add_argument("--scoring", choices=("additive", "multiplicative"), default="additive")
    p.add_argument(
        "--candidate-window",
        type=positive_int,
        default=1,
        help="replacement candidates: ids missed in the last W minibatches",
    )
    add_fill_free_arg(p)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--metrics-out",
        type=Path,
        help="write every minibatch's metrics as JSON lines (one policy only)",
    )
    add_llm_args(p)
    p.set_defaults(func=run)


def _pick_trace(path: Path, rank: int | None) -> Path:
    from rudder.trainer_hooks.trace import find_traces, load_trace

    files = find_traces(path)
    if rank is None:
        return files[0]
    for f in files:
        if load_trace(f).meta.trainer == rank:
            return f
    raise UserError(f"{path}: no trace of trainer rank {rank}")


def _agent(args: argparse.Namespace, stack: contextlib.ExitStack):
    """The in-process agent for the rudder policy, with the LLM available if it needs one."""
    from rudder.controller.graph import build_agent
    from rudder.controller.offline import AgentDecider
    from rudder.decisions import DeciderSpec
    from rudder.llm.embedded import llm_available

    if DeciderSpec.parse(args.decider).is_llm:
        stack.enter_context(llm_available(args.llm_url, args.llm_model))
    agent = build_agent(
        args.decider, llm_url=args.llm_url, llm_model=args.llm_model, prompt=args.prompt
    )
    stack.callback(agent.close)
    return AgentDecider(agent, args.decider, trainer=0)


def run(args: argparse.Namespace) -> int:
    from rudder.cli.common import format_table, progress
    from rudder.decisions import DeciderSpec
    from rudder.metrics_trace import metrics_line
    from rudder.trainer_hooks.policies import POLICY_NAMES, PolicySpec, ScoredOptions
    from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay
    from rudder.trainer_hooks.trace import load_trace

    names = list(POLICY_NAMES) if args.policy == "all" else args.policy.split(",")
    specs = [PolicySpec.parse(n) for n in names]
    if args.metrics_out and len(specs) != 1:
        raise UserError("--metrics-out records one policy's metrics: name a single --policy")
    agent_decider = DeciderSpec.parse(args.decider).is_agent
    config = ReplayConfig(
        buffer_fraction=args.buffer,
        decider="never" if agent_decider else args.decider,  # the agent replaces it below
        latency=args.latency,
        agent_sync=args.agent_sync,
        scored=ScoredOptions(
            scoring=args.scoring,
            candidate_window=args.candidate_window,
            fill_free=args.fill_free,
            admission=args.admission,
        ),
    )
    path = _pick_trace(args.trace, args.rank)
    trace = load_trace(path)
    log.info(
        "trace %s: trainer %d, %d minibatches, %d remote ids; buffer %d rows",
        path,
        trace.meta.trainer,
        trace.num_minibatches,
        trace.ids.shape[0],
        trace.meta.capacity(args.buffer),
    )
    ctx = context_for(trace, specs)

    metrics_file = open(args.metrics_out, "w") if args.metrics_out else None  # noqa: SIM115
    on_metrics = (lambda m: metrics_file.write(metrics_line(m))) if metrics_file else None
    results = []
    with contextlib.ExitStack() as stack:
        if metrics_file:
            stack.callback(metrics_file.close)
        agent = _agent(args, stack) if agent_decider else None
        with progress(len(specs), "replay") as bar:
            for spec in specs:
                bar.set_postfix_str(str(spec))
                r = replay(
                    trace,
                    spec,
                    config,
                    ctx,
                    on_metrics=on_metrics,
                    decider=agent if spec.name == "rudder" else None,
                )
                row = r.to_dict()
                if agent is not None and spec.name == "rudder":
                    st = agent.stats()
                    row.update(
                        valid_rate=st["valid_pct"] / 100,
                        pass_at_1_hits=st["pass_at_1_hits"],
                        pass_at_1_comm=st["pass_at_1_comm"],
                        agent=st,
                    )
                results.append(row)
                bar.update(1)

    bound = next((r["rows_fetched"] for r in results if r["policy"] == "belady"), None)
    for r in results:
        r["rows_vs_belady"] = r["rows_fetched"] / bound if bound else None
    report = {
        "trace": str(path),
        "trainer": trace.meta.trainer,
        "minibatches": trace.num_minibatches,
        "buffer_fraction": args.buffer,
        "capacity": trace.meta.capacity(args.buffer),
        "decider": args.decider,
        "latency": args.latency,
        "scoring": args.scoring,
        "candidate_window": args.candidate_window,
        "fill_free": args.fill_free,
        "admission": args.admission,
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", args.json)

    headers = [
        "policy",
        "decider",
        "rows_fetched",
        "vs_belady",
        "hit_%",
        "extra_rows",
        "rounds",
        "interval",
        "seconds",
    ]
    rows = [
        [
            r["policy"],
            r["decider"],
            r["rows_fetched"],
            r["rows_vs_belady"],
            100 * r["hit_rate"],
            r["extra_rows"] + r["prefill_rows"],
            r["replacements"],
            r["replacement_interval"] if r["decider"] else None,
            r["seconds"],
        ]
        for r in results
    ]
    print(
        f"buffer {args.buffer:.0%} = {report['capacity']:,} rows; trainer {trace.meta.trainer}, "
        f"{trace.num_minibatches} minibatches, {trace.ids.shape[0]:,} remote inputs"
    )
    print(format_table(headers, rows))
    return 0
