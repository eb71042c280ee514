"""The agent's four steps, as plain functions from state to a partial update.

collect -> contextualize -> decide -> self_evaluate (the paper's Metrics Collector, Context
Builder, Decision Maker and its self-evaluation). Only ``decide`` does I/O (through the model
in the runtime context); the others are pure and tested alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from langgraph.runtime import Runtime

from rudder.controller.decision_models import DecisionModel, OnDecision, validate
from rudder.controller.effects import (
    BASELINES,
    evaluate,
    history_line,
    noise_bands,
    snapshot,
    window_of,
)
from rudder.controller.state import ZERO_COUNTS, AgentState
from rudder.decisions import Decider
from rudder.protocol import Metrics

HISTORY_LINES = 4  # evaluated decisions the prompt shows
MAX_AWAITING = 64  # decisions awaiting their window; older ones are dropped unscored


@dataclass(slots=True)
class AgentContext:
    """What a run of the graph needs besides the state.

    The trainer's model, the heuristic run on the same metrics as a Pass@1 baseline (None: no
    baseline), and who hears a decision the model knows before its answer is complete (the
    sidecar, to answer the trainer at once).
    """

    model: DecisionModel
    shadow: Decider | None = None
    on_decision: OnDecision | None = None


def collect(state: AgentState) -> dict:
    """Ingest the newest metrics."""
    return {"recent": [state["incoming"]]}


def contextualize(state: AgentState) -> dict:
    """Score the earlier decisions whose window has passed; land the pending one.

    The metrics that arrive right after a decision come from the minibatch it was applied at
    (its window is the "before"); metrics a window later show its effect.
    """
    m = state["incoming"]
    counts = {**ZERO_COUNTS, **(state.get("counts") or {})}
    evaluated, awaiting = [], []
    bands = noise_bands(state.get("recent") or [m], window_of(m))
    for landed in state.get("awaiting") or []:
        if m["minibatch"] < landed["due"]:
            awaiting.append(landed)
            continue
        rec = evaluate(landed, m, bands)
        evaluated.append(rec)
        if landed["expected_hit_pct"] is not None:  # an invalid answer predicted nothing
            counts["evaluated"] += 1
            counts["pass_hit"] += rec["pass_hit"]
            counts["pass_comm"] += rec["pass_comm"]
            for name in BASELINES:
                counts[f"baseline_{name}_hit"] += rec[f"baseline_{name}_hit"]
                counts[f"baseline_{name}_comm"] += rec[f"baseline_{name}_comm"]
    pending = state.get("pending")
    if pending is not None:
        due = m["minibatch"] + window_of(m)
        awaiting.append({**pending, "before": snapshot(m), "due": due})
    return {
        "history": evaluated,
        "awaiting": awaiting[-MAX_AWAITING:],
        "pending": None,
        "counts": counts,
    }


def decide(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Ask the model (one LLM call for the LLM); a failure is an invalid answer, not a crash."""
    lines = [history_line(r) for r in (state.get("history") or [])[-HISTORY_LINES:]]
    ctx = runtime.context
    t0 = time.perf_counter()
    decided: list[float] = []
    acted: list[str] = []  # the decision someone acted on before the answer was complete

    def early(decision) -> None:
        decided.append(time.perf_counter() - t0)
        if ctx.on_decision is not None:
            acted.append(decision.value)
            ctx.on_decision(decision)

    try:
        raw, error = ctx.model.answer(state["incoming"], lines, on_decision=early), None
    except Exception as e:  # any model failure means: skip, counted
        raw, error = None, f"{type(e).__name__}: {e}"[:300]
    answer_s = time.perf_counter() - t0
    baseline = ctx.shadow.decide(Metrics.from_dict(state["incoming"])).value if ctx.shadow else None
    return {
        "answer": raw,
        "answer_error": error,
        "latency_s": decided[0] if decided else answer_s,  # when the decision was known
        "answer_s": answer_s,  # when the whole answer (predictions, reason) was
        "early": acted[0] if acted else None,
        "heuristic": baseline,
    }


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
            # A decision sent early was acted on even if the rest of the answer went wrong.
            "decision": state.get("early") or "skip",
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
        "heuristic": state.get("heuristic"),
    }
    return {
        "result": result,
        "pending": pending,
        "counts": counts,
        "latencies": [state["latency_s"]],
        "answer_latencies": [state.get("answer_s", state["latency_s"])],
    }
