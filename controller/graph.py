"""The decision agent as a LangGraph state machine, and the :class:`Agent` the sidecar serves.

``build_graph()`` returns the uncompiled builder (collect -> contextualize -> decide ->
self_evaluate); :class:`GraphAgent` runs one thread per trainer, ``<run>:trainer-<rank>``,
with one of two engines over the same steps and state:

- ``langgraph`` (the LLM): the compiled graph with a checkpointer (SQLite file, so a restarted
  sidecar resumes each trainer's history; in memory otherwise), pruned to each trainer's latest
  checkpoint after every decision (``checkpoints.py``).
- ``direct`` (rules, classifiers): :func:`run_steps` calls the same four steps in the same
  order and merges their updates with the state's own reducers, without Pregel's per-step
  bookkeeping and checkpoint serialisation (5.9 ms a decision with the heuristic and SQLite;
  0.42 ms directly: docs/protocol.md). Its state is saved to the checkpoint file at most every
  ``save_interval_s`` per trainer and when the trainer leaves or the agent closes.
  ``tests/unit/test_agent_graph.py`` checks both engines give the same states.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import sqlite3
import statistics
import threading
import time
import typing
from collections.abc import Callable, Collection
from pathlib import Path

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from rudder.controller import nodes
from rudder.controller.checkpoints import PrunedMemorySaver, PrunedSqliteSaver, StateStore
from rudder.controller.decision_models import DecisionModel, LLMConfig, make_model
from rudder.controller.effects import BASELINES
from rudder.controller.state import AgentState
from rudder.decisions import DeciderSpec, Decision
from rudder.protocol import AgentDecision, Metrics
from rudder.rules import Heuristic

log = logging.getLogger(__name__)

ENGINES = ("langgraph", "direct")
# The agent's steps, in order: the graph's nodes and edges, and what run_steps calls.
STEPS: tuple[tuple[str, Callable[..., dict]], ...] = (
    ("collect", nodes.collect),
    ("contextualize", nodes.contextualize),
    ("decide", nodes.decide),
    ("self_evaluate", nodes.self_evaluate),
)
_WITH_RUNTIME = {name for name, fn in STEPS if len(inspect.signature(fn).parameters) == 2}
# The state's reducers, read from its annotations (Annotated[list, keep_last(n)]), as LangGraph
# reads them; every other key keeps the last value written.
_REDUCERS = {
    key: hint.__metadata__[0]
    for key, hint in typing.get_type_hints(AgentState, include_extras=True).items()
    if typing.get_origin(hint) is typing.Annotated
}


def build_graph() -> StateGraph:
    g = StateGraph(AgentState, context_schema=nodes.AgentContext)
    for name, step in STEPS:
        g.add_node(name, step)
    names = [START, *(name for name, _ in STEPS), END]
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    return g


def _merge(values: dict, update: dict) -> None:
    for key, value in update.items():
        reducer = _REDUCERS.get(key)
        values[key] = value if reducer is None else reducer(values.get(key), value)


def run_steps(state: dict, update: dict, context: nodes.AgentContext) -> dict:
    """One decision without LangGraph's engine: the new state after ``update`` and the steps.

    ``state`` is not changed (a stats reader may hold it); the steps return fresh values.
    """
    values = dict(state)
    _merge(values, update)
    runtime = Runtime(context=context)
    for name, step in STEPS:
        _merge(values, step(values, runtime) if name in _WITH_RUNTIME else step(values))
    return values


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
    """The agent: one thread (and one model instance) per trainer, on one of :data:`ENGINES`.

    Memory is O(trainers): each trainer's latest state only (checkpoints pruned), and a trainer
    the sidecar releases (bye, expiry) leaves only its final statistics, of which the
    ``keep_departed`` most recent are kept.
    """

    def __init__(
        self,
        model_factory: Callable[[], DecisionModel],
        *,
        run_id: str = "run",
        checkpoint: str | Path | None = None,
        engine: str = "langgraph",
        save_interval_s: float = 1.0,
        keep_departed: int = 256,
    ):
        if engine not in ENGINES:
            raise ValueError(f"unknown agent engine {engine!r}: one of {ENGINES}")
        if save_interval_s < 0 or keep_departed < 0:
            raise ValueError("save_interval_s and keep_departed must be >= 0")
        self._factory = model_factory
        self.run_id = run_id
        self.engine = engine
        self._save_interval_s = save_interval_s
        self._keep_departed = keep_departed
        self._conn = None
        if checkpoint is not None:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(checkpoint), check_same_thread=False)
            # Write-ahead log, fsync at checkpoints of the log only: a crash can lose the last
            # decision's history entry, never corrupt the file; ~1 ms less per decision.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self.graph = None
        self._saver: PrunedSqliteSaver | PrunedMemorySaver | None = None
        self._store: StateStore | None = None
        if engine == "langgraph":
            self._saver = PrunedSqliteSaver(self._conn) if self._conn else PrunedMemorySaver()
            self.graph = build_graph().compile(checkpointer=self._saver)
        elif self._conn is not None:
            self._store = StateStore(self._conn)
        self._models: dict[int, DecisionModel] = {}
        self._shadows: dict[int, Heuristic] = {}  # the Pass@1 baseline, per trainer
        self._info: dict[int, dict] = {}
        # Each trainer's latest state, replaced (never changed in place) after each decision,
        # so the statistics read it without a lock or a checkpoint read.
        self._states: dict[int, dict] = {}
        self._saved_at: dict[int, float] = {}  # direct engine with a file: last save
        self._unsaved: set[int] = set()  # ... and whose latest state is not on file yet
        self._departed: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _thread(self, trainer: int) -> str:
        return f"{self.run_id}:trainer-{trainer}"

    def _config(self, trainer: int) -> dict:
        return {"configurable": {"thread_id": self._thread(trainer)}}

    def _model(self, trainer: int) -> DecisionModel:
        with self._lock:
            if trainer not in self._models:
                self._models[trainer] = self._factory()
                self._shadows[trainer] = Heuristic()
            return self._models[trainer]

    def hello(self, trainer: int, info: dict) -> None:
        with self._lock:
            self._info[trainer] = dict(info)
            self._departed.pop(trainer, None)  # back: its state (if kept) continues

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
        context = nodes.AgentContext(
            model=self._model(trainer), shadow=self._shadows.get(trainer), on_decision=early
        )
        if self.graph is not None:
            # One checkpoint write per decision, at its end, not after every step (4x fewer
            # writes; a decision cut short by a crash is simply made again from the next
            # metrics), then the older ones go: the state holds all the history it needs.
            out = self.graph.invoke(
                update, self._config(trainer), durability="exit", context=context
            )
            self._saver.prune([self._thread(trainer)])
        else:
            out = run_steps(self._current(trainer), update, context)
            self._maybe_save(trainer, out)
        self._states[trainer] = out
        result = out["result"]  # graph state holds plain values: the decision as its str
        return AgentDecision(**{**result, "decision": Decision(result["decision"])})

    def _current(self, trainer: int) -> dict:
        state = self._states.get(trainer)
        if state is None and self._store is not None:
            state = self._store.load(self._thread(trainer))  # a restarted sidecar resumes
        return state or {}

    def _maybe_save(self, trainer: int, state: dict, force: bool = False) -> None:
        if self._store is None:
            return
        now = time.monotonic()
        if force or now - self._saved_at.get(trainer, -float("inf")) >= self._save_interval_s:
            self._store.save(self._thread(trainer), state)
            self._saved_at[trainer] = now
            self._unsaved.discard(trainer)
        else:
            self._unsaved.add(trainer)

    def state(self, trainer: int) -> dict:
        """The trainer's latest state (from memory, else from the checkpoint)."""
        state = self._states.get(trainer)
        if state is not None:
            return state
        if self.graph is not None:
            return self.graph.get_state(self._config(trainer)).values
        return self._current(trainer)

    def release(self, trainer: int) -> None:
        """The sidecar forgot ``trainer`` (bye, expiry): free all but its final statistics.

        Its latest state stays in the checkpoint file (saved now if unsaved), so it resumes if
        it comes back; without a file, its history goes. Called between its decisions.
        """
        with self._lock:
            self._models.pop(trainer, None)
            self._shadows.pop(trainer, None)
            self._info.pop(trainer, None)
            state = self._states.pop(trainer, None)
            if state is not None and self._keep_departed:
                self._departed[trainer] = trainer_stats(state)
                self._departed.move_to_end(trainer)
                while len(self._departed) > self._keep_departed:
                    self._departed.popitem(last=False)
        if state is not None and trainer in self._unsaved:
            self._maybe_save(trainer, state, force=True)
        self._saved_at.pop(trainer, None)
        if isinstance(self._saver, PrunedMemorySaver):
            self._saver.prune([self._thread(trainer)], strategy="delete")

    def trainers(self) -> list[int]:
        with self._lock:
            ids = set(self._models) | set(self._info) | set(self._states) | set(self._departed)
        return sorted(ids)

    def stats(self, trainers: Collection[int] | None = None) -> dict[int, dict]:
        """Statistics of ``trainers`` (default: every one known, departed ones included)."""
        out = {}
        for t in self.trainers() if trainers is None else trainers:
            state = self._states.get(t)
            if state is not None:
                out[t] = trainer_stats(state)
            elif (left := self._departed.get(t)) is not None:
                out[t] = left
            elif t in self._info:  # said hello, no decision yet (its history may be on file)
                out[t] = trainer_stats(self.state(t))
        return out

    def close(self) -> None:
        for trainer in list(self._unsaved):
            if (state := self._states.get(trainer)) is not None:
                self._maybe_save(trainer, state, force=True)
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
    return GraphAgent(
        lambda: make_model(spec, llm),
        run_id=run_id,
        checkpoint=checkpoint,
        # An LLM call takes seconds: LangGraph's engine costs nothing next to it. A rule or a
        # classifier answers in microseconds: the same steps run directly.
        engine="langgraph" if spec.is_llm else "direct",
    )
