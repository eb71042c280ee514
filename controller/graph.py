"""The decision agent as a LangGraph state machine, and the :class:`Agent` the sidecar serves.

``build_graph()`` returns the uncompiled builder (collect -> contextualize -> decide ->
self_evaluate); :class:`GraphAgent` compiles it with a checkpointer (SQLite file, so a
restarted sidecar resumes each trainer's history) and runs one thread per trainer,
``<run>:trainer-<rank>``.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import statistics
import threading
from collections.abc import Callable
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from rudder.controller import nodes
from rudder.controller.decision_models import DecisionModel, LLMConfig, make_model
from rudder.controller.effects import BASELINES
from rudder.controller.state import AgentState
from rudder.decisions import DeciderSpec, Decision
from rudder.protocol import AgentDecision, Metrics
from rudder.rules import Heuristic

log = logging.getLogger(__name__)


def build_graph() -> StateGraph:
    g = StateGraph(AgentState, context_schema=nodes.AgentContext)
    g.add_node("collect", nodes.collect)
    g.add_node("contextualize", nodes.contextualize)
    g.add_node("decide", nodes.decide)
    g.add_node("self_evaluate", nodes.self_evaluate)
    g.add_edge(START, "collect")
    g.add_edge("collect", "contextualize")
    g.add_edge("contextualize", "decide")
    g.add_edge("decide", "self_evaluate")
    g.add_edge("self_evaluate", END)
    return g


def trainer_stats(values: dict) -> dict:
    """Live statistics of one trainer from its state."""
    c = values.get("counts") or {}
    n, ev = c.get("decisions", 0), c.get("evaluated", 0)
    lat = values.get("latencies") or []
    seqs = [r["minibatch"] for r in values.get("recent") or []]
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    return {
        "decisions": n,
        "valid_pct": 100 * c.get("valid", 0) / n if n else 0.0,
        "invalid": c.get("invalid", 0),
        "replace_pct": 100 * c.get("replace", 0) / n if n else 0.0,
        "evaluated": ev,
        "awaiting_evaluation": len(values.get("awaiting") or []),
        "pass_at_1_hits": c.get("pass_hit", 0) / ev if ev else None,
        "pass_at_1_comm": c.get("pass_comm", 0) / ev if ev else None,
        **{
            f"baseline_{name}_{what}": c.get(f"baseline_{name}_{key}", 0) / ev if ev else None
            for name in BASELINES
            for what, key in (("hits", "hit"), ("comm", "comm"))
        },
        "latency_p50_s": statistics.median(lat) if lat else None,
        "answer_p50_s": statistics.median(full)
        if (full := values.get("answer_latencies"))
        else None,
        "latency_p95_s": sorted(lat)[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        if lat
        else None,
        "replacement_interval": statistics.mean(gaps) if gaps else None,
    }


class GraphAgent:
    """The LangGraph agent: one thread (and one model instance) per trainer."""

    def __init__(
        self,
        model_factory: Callable[[], DecisionModel],
        *,
        run_id: str = "run",
        checkpoint: str | Path | None = None,
    ):
        self._factory = model_factory
        self.run_id = run_id
        self._conn = None
        if checkpoint is not None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(checkpoint), check_same_thread=False)
            # Write-ahead log, fsync at checkpoints of the log only: a crash can lose the last
            # decision's history entry, never corrupt the file; ~1 ms less per decision.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            saver = SqliteSaver(self._conn)
        else:
            saver = InMemorySaver()
        self.graph = build_graph().compile(checkpointer=saver)
        self._models: dict[int, DecisionModel] = {}
        self._shadows: dict[int, Heuristic] = {}  # the Pass@1 baseline, per trainer
        self._info: dict[int, dict] = {}
        self._lock = threading.Lock()

    def _config(self, trainer: int) -> dict:
        return {"configurable": {"thread_id": f"{self.run_id}:trainer-{trainer}"}}

    def _model(self, trainer: int) -> DecisionModel:
        with self._lock:
            if trainer not in self._models:
                self._models[trainer] = self._factory()
                self._shadows[trainer] = Heuristic()
            return self._models[trainer]

    def hello(self, trainer: int, info: dict) -> None:
        self._info[trainer] = dict(info)

    def decide(
        self,
        trainer: int,
        metrics: Metrics,
        early: Callable[[Decision], None] | None = None,
    ) -> AgentDecision:
        """Run the graph for one decision; ``early`` hears it before the answer is complete."""
        update = {"trainer": trainer, "incoming": metrics.to_dict()}
        if trainer in self._info:
            update["info"] = self._info[trainer]
        # One checkpoint write per decision, at its end, not after every step (4x fewer writes;
        # a decision cut short by a crash is simply made again from the next metrics).
        out = self.graph.invoke(
            update,
            self._config(trainer),
            durability="exit",
            context=nodes.AgentContext(
                model=self._model(trainer), shadow=self._shadows.get(trainer), on_decision=early
            ),
        )
        result = out["result"]  # graph state holds plain values: the decision as its str
        return AgentDecision(**{**result, "decision": Decision(result["decision"])})

    def state(self, trainer: int) -> dict:
        return self.graph.get_state(self._config(trainer)).values

    def trainers(self) -> list[int]:
        return sorted(set(self._models) | set(self._info))

    def stats(self) -> dict[int, dict]:
        return {t: trainer_stats(self.state(t)) for t in self.trainers()}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def build_agent(
    decider: str | DeciderSpec,
    *,
    run_id: str = "run",
    checkpoint: str | Path | None = None,
    llm_url: str | None = None,
    llm_model: str | None = None,
    prompt: str | None = None,
    warm_up: bool = False,
    **llm_options,
) -> GraphAgent:
    """The agent for a decider spec: ``llm``, ``classifier:PATH``, or a rule spec.

    ``warm_up``: put the LLM's system prompt in the server's cache now (sidecars do).
    """
    spec = DeciderSpec.parse(decider)  # fail now, not at the first decision, on a bad spec
    llm = None
    if spec.is_llm:
        base = LLMConfig()
        llm = LLMConfig(
            url=llm_url or base.url,
            model=llm_model or base.model,
            prompt=prompt or base.prompt,
            **llm_options,
        )
    first = make_model(spec, llm)  # a classifier's model file is loaded and checked now
    if llm is not None and warm_up:
        try:
            log.info("LLM prompt cache warmed in %.1f s", first.warm_up())
        except Exception as e:  # the first decision will report the LLM's failure as invalid
            log.warning("could not warm up the LLM at %s: %s", llm.url, e)
    return GraphAgent(lambda: make_model(spec, llm), run_id=run_id, checkpoint=checkpoint)
