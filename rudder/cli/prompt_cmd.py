"""``rudder prompt``: see and evaluate the agent's prompts on recorded metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rudder.cli.common import positive_int
from rudder.llm.defaults import llm_model_from_env, llm_url_from_env
from rudder.prompts import DEFAULT_PROMPT


def add_llm_args(p: argparse.ArgumentParser) -> None:
    """--llm-url and --llm-model, for every command that can run the LLM decider."""
    p.add_argument(
        "--llm-url",
        default=llm_url_from_env(),
        help="Ollama API base URL (an embedded server is started there if none answers)",
    )
    p.add_argument(
        "--llm-model",
        default=llm_model_from_env(),
        help="model name; prompt eval takes several, joined by commas "
        "(default: qwen2.5-coder-0.5b)",
    )
    p.add_argument(
        "--prompt", default=None, help=f"prompt name or directory (default: {DEFAULT_PROMPT})"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompt", help="render and evaluate the agent's decision prompt")
    psub = p.add_subparsers(dest="prompt_command", metavar="SUBCOMMAND", required=True)

    r = psub.add_parser("render", help="print the exact messages the LLM gets for one minibatch")
    r.add_argument("--metrics-trace", required=True, type=Path, help="metrics JSON lines")
    r.add_argument("--at", type=int, default=-1, help="record index (default: the last)")
    r.add_argument(
        "--prompt", default=None, help=f"prompt name or directory (default: {DEFAULT_PROMPT})"
    )
    r.add_argument(
        "--history-decider",
        default="never",
        help="the decisions the shown history assumes (a rule spec)",
    )
    r.set_defaults(func=run_render)

    e = psub.add_parser(
        "eval",
        help="replay a metrics trace through the agent: valid %%, Pass@1, replace/skip, latency",
        description="Feed a recorded metrics trace through the agent, decision by decision. "
        "The trace does not react to the decisions: Pass@1 asks whether each predicted "
        "direction of windowed %-hits and communication matches what the recorded run did "
        "next, printed beside the Pass@1 of constant predictors (baseline_replace_*, "
        "baseline_skip_*) and of the heuristic (baseline_heuristic_*). Several traces, "
        "models (--llm-model a,b) or prompts (--prompt a,b) give one table row each.",
    )
    e.add_argument("--metrics-trace", required=True, type=Path, action="append")
    e.add_argument("--decider", default="llm", help="llm, classifier:PATH, or a rule spec")
    e.add_argument("--every", type=positive_int, default=1, help="decide on every K-th record")
    e.add_argument("--limit", type=positive_int, help="at most N decisions")
    e.add_argument("--decisions", type=Path, help="write every decision as JSON lines here")
    e.add_argument("--json", type=Path, help="write the statistics here")
    add_llm_args(e)
    e.set_defaults(func=run_eval)


def run_render(args: argparse.Namespace) -> int:
    from rudder.controller.decision_models import LLMConfig, LLMModel
    from rudder.controller.offline import render
    from rudder.metrics_trace import read_metrics_trace
    from rudder.prompts import DEFAULT_PROMPT

    records = read_metrics_trace(args.metrics_trace)
    model = LLMModel(LLMConfig(prompt=args.prompt or DEFAULT_PROMPT))
    for m in render(model.messages, records, args.at, args.history_decider):
        print(f"----- {m['role']} -----\n{m['content']}")
    return 0


# The columns of the comparison table (a single evaluation prints every statistic).
EVAL_COLUMNS = (
    "decisions",
    "valid_pct",
    "replace_pct",
    "evaluated",
    "pass_at_1_hits",
    "baseline_replace_hits",
    "baseline_skip_hits",
    "baseline_heuristic_hits",
    "pass_at_1_comm",
    "latency_p50_s",
    "answer_p50_s",
)


def run_eval(args: argparse.Namespace) -> int:
    import contextlib
    import itertools

    from rudder.cli.common import format_table
    from rudder.controller.graph import build_agent
    from rudder.controller.offline import evaluate_metrics
    from rudder.decisions import DeciderSpec
    from rudder.llm.embedded import llm_available
    from rudder.metrics_trace import read_metrics_trace

    spec = DeciderSpec.parse(args.decider)
    traces = {path: read_metrics_trace(path) for path in args.metrics_trace}
    models = (args.llm_model or "").split(",") if spec.is_llm else [""]
    prompts = (args.prompt or "").split(",") if spec.is_llm else [""]
    out = open(args.decisions, "w") if args.decisions else None  # noqa: SIM115
    ctx = (
        llm_available(args.llm_url, models[0] or None) if spec.is_llm else contextlib.nullcontext()
    )
    results = []
    try:
        with ctx:
            for path, model, prompt in itertools.product(traces, models, prompts):
                agent = build_agent(
                    spec, llm_url=args.llm_url, llm_model=model or None, prompt=prompt or None
                )
                try:
                    stats = evaluate_metrics(
                        agent,
                        traces[path],
                        every=args.every,
                        limit=args.limit,
                        on_decision=(lambda d: out.write(json.dumps(d.to_dict()) + "\n"))
                        if out
                        else None,
                    )
                finally:
                    agent.close()
                results.append({"trace": str(path), "model": model, "prompt": prompt, **stats})
    finally:
        if out:
            out.close()
    if args.json:
        body = results[0] if len(results) == 1 else results
        args.json.write_text(json.dumps(body, indent=2) + "\n")
    if len(results) == 1:
        for k, v in results[0].items():
            if k not in ("trace", "model", "prompt"):
                print(f"{k:24s} {v if not isinstance(v, float) else round(v, 3)}")
        return 0
    headers = ["trace", "model", "prompt", *EVAL_COLUMNS]
    rows = [
        [Path(r["trace"]).name, r["model"] or "-", r["prompt"] or "-"]
        + [r.get(c) for c in EVAL_COLUMNS]
        for r in results
    ]
    print(format_table(headers, rows))
    return 0
