"""The agent's four steps, as plain functions from state to a partial update.

collect -> contextualize -> decide -> self_evaluate (the paper's Metrics Collector, Context
Builder, Decision Maker and its self-evaluation). Only ``decide`` does I/O (through the model
in the runtime context); the others are pure and tested alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from langgraph.runtime import Runtime

from rudder.controller.decision_models import DecisionModel, validate
from rudder.controller.effects import evaluate, history_line
from rudder.controller.state import ZERO_COUNTS, AgentState

HISTORY_LINES = 4  # evaluated decisions the prompt shows


@dataclass(slots=True)
class AgentContext:
    """What a run of the graph needs besides the state: the trainer's model."""

    model: DecisionModel


def collect(state: AgentState) -> dict:
    """Ingest the newest metrics."""
    return {"recent": [state["incoming"]]}


def contextualize(state: AgentState) -> dict:
    """Advance the pipeline of earlier decisions: evaluate the landed one, land the pending one.

    The metrics that arrive right after a decision come from the minibatch it was applied at
    (its "before"); the ones after that show its effect.
    """
    m = state["incoming"]
    counts = dict(state.get("counts") or ZERO_COUNTS)
    evaluated = []
    landed = state.get("landed")
    if landed is not None:
        rec = evaluate(landed, m)
        evaluated.append(rec)
        if landed["expected_hit_pct"] is not None:  # an invalid answer predicted nothing
            counts["evaluated"] += 1
            counts["pass_hit"] += rec["pass_hit"]
            counts["pass_comm"] += rec["pass_comm"]
    pending = state.get("pending")
    if pending is not None:
        pending = {
            **pending,
            "before": {
                "minibatch": m["minibatch"],
                "hit_pct": m["hit_pct"],
                "rows_fetched": m["rows_fetched"],
            },
        }
    return {"history": evaluated, "landed": pending, "pending": None, "counts": counts}


def decide(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Ask the model (one LLM call for the LLM); a failure is an invalid answer, not a crash."""
    lines = [history_line(r) for r in (state.get("history") or [])[-HISTORY_LINES:]]
    t0 = time.perf_counter()
    try:
        raw, error = runtime.context.model.answer(state["incoming"], lines), None
    except Exception as e:  # any model failure means: skip, counted
        raw, error = None, f"{type(e).__name__}: {e}"[:300]
    return {"answer": raw, "answer_error": error, "latency_s": time.perf_counter() - t0}


def self_evaluate(state: AgentState) -> dict:
    """Validate the answer, count it, and record its predicted effect for later scoring."""
    m = state["incoming"]
    answer, why = (
        (None, state["answer_error"])
        if state.get("answer_error")
        else validate(state.get("answer"))
    )
    counts = dict(state["counts"])
    counts["decisions"] += 1
    if answer is None:
        counts["invalid"] += 1
        answer = {
            "decision": "skip",
            "reason": f"invalid answer: {why}",
            "expected_hit_pct": None,
            "expected_communication": None,
        }
    else:
        counts["valid"] += 1
    counts[answer["decision"]] += 1
    result = {
        "trainer": m["trainer"],
        "minibatch": m["minibatch"],
        "valid": why is None,
        "latency_s": state["latency_s"],
        **answer,
    }
    pending = {
        "minibatch": m["minibatch"],
        "decision": answer["decision"],
        "expected_hit_pct": answer["expected_hit_pct"],
        "expected_communication": answer["expected_communication"],
    }
    return {
        "result": result,
        "pending": pending,
        "counts": counts,
        "latencies": [state["latency_s"]],
    }
