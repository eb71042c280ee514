"""Out-of-distribution check (paper 5.4): deciders on a graph they learnt from, and on another.

The classifiers learnt from the bench graph's traces at the bench's batch size. Here every
decider (the classifiers, the LLM agent, the heuristic for reference) steers the `rudder`
policy over two fresh traces: *seen* (the bench graph again, another sampling seed) and
*unseen* (another graph, trained at another batch size). The agent decides in the traces'
virtual time: each answer lands after its measured latency (as in `rudder replay --decider`),
so a slow decider decides less often, as it would in training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from rudder.evaluation.classifiers import accuracy, teach
from rudder.evaluation.config import BenchConfig
from rudder.evaluation.replays import add_totals, fraction_key, replay_all
from rudder.evaluation.variants import CLASSIFIER_KINDS
from rudder.launcher.summary import agent_totals
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.trace import AccessTrace

log = logging.getLogger(__name__)

BOUNDS = ("none", "best-static", "belady")


def agent_replay(
    traces: Sequence[AccessTrace], decider: str, buffer: float, cfg: BenchConfig
) -> dict:
    """The rudder policy steered by the agent with ``decider`` over every trainer's trace."""
    from rudder.controller.graph import build_agent
    from rudder.controller.offline import AgentDecider

    agent = build_agent(
        decider, llm_url=cfg.llm.url, llm_model=cfg.llm.model, prompt=cfg.llm.prompt
    )
    totals: dict = {}
    decisions = replace = dropped = 0
    intervals = []
    try:
        for trace in traces:
            r = replay(
                trace,
                "rudder",
                ReplayConfig(buffer_fraction=buffer),
                decider=AgentDecider(agent, decider, trainer=trace.meta.trainer),
            )
            add_totals(totals, r.totals)
            decisions += r.decisions
            replace += r.replace_decisions
            dropped += r.dropped_requests
            if r.replacement_interval:
                intervals.append(r.replacement_interval)
        stats = agent_totals({t: {"agent": s} for t, s in agent.stats().items()})
    finally:
        agent.close()
    return {
        "totals": totals,
        "decisions": decisions,
        "replace_pct": 100 * replace / decisions if decisions else None,
        "dropped_requests": dropped,
        "replacement_interval": sum(intervals) / len(intervals) if intervals else None,
        "agent": stats,
    }


def evaluate_on(
    name: str,
    traces: Sequence[AccessTrace],
    cfg: BenchConfig,
    models: Path,
    out: Path,
    on_event: Callable[[str], None],
) -> dict:
    """Every decider of ``cfg.ood`` on one set of traces, with the bounds and label accuracy."""
    b = cfg.ood.buffer
    # a classifier the bench could not train is left out (results["classifiers"] says why)
    kinds = [
        d for d in cfg.ood.deciders if d in CLASSIFIER_KINDS and (models / f"{d}.joblib").is_file()
    ]
    deciders = {}
    for d in cfg.ood.deciders:
        if d in CLASSIFIER_KINDS and d not in kinds:
            continue
        on_event(f"ood {name}: {d}")
        spec = f"classifier:{models / f'{d}.joblib'}" if d in CLASSIFIER_KINDS else d
        deciders[d] = agent_replay(traces, spec, b, cfg)
    metrics = teach(traces, [b], cfg.classifiers.teachers, out / name / "metrics")
    meta = traces[0].meta
    return {
        "graph": meta.graph,
        "batch_size": meta.batch_size,
        "trainers": len(traces),
        "minibatches": sum(t.num_minibatches for t in traces),
        "buffer": b,
        "bounds": replay_all(traces, [b], BOUNDS)[fraction_key(b)],
        "deciders": deciders,
        "accuracy": accuracy(kinds, models, metrics) if kinds else {},
    }
