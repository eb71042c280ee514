"""The agent without a trainer: over a replayed access trace, or a recorded metrics trace.

:class:`AgentDecider` lets ``rudder replay`` put the in-process agent where a trainer's
decider goes (each answer timed, for virtual-time replay). :func:`evaluate_metrics` feeds a
recorded metrics trace through the agent, as ``rudder prompt eval`` does: the trace does not
react to the decisions, so Pass@1 there asks whether the predicted directions match what the
recorded run did next. :func:`render` shows the exact messages the LLM would get.
"""

from __future__ import annotations

from collections.abc import Callable

from rudder.controller.decision_models import RuleModel
from rudder.controller.effects import history_line
from rudder.controller.graph import GraphAgent, trainer_stats
from rudder.controller.nodes import HISTORY_LINES
from rudder.decisions import Decision
from rudder.protocol import AgentDecision, Metrics
from rudder.rules import make_decider


class AgentDecider:
    """The agent as a timed decider for one trainer (see ``trainer_hooks.decisions``)."""

    def __init__(self, agent: GraphAgent, spec: str, trainer: int = 0):
        self.agent = agent
        self.spec = spec
        self.trainer = trainer

    def decide_timed(self, metrics: Metrics) -> tuple[Decision, float]:
        d = self.agent.decide(self.trainer, metrics)
        return d.decision, d.latency_s

    def stats(self) -> dict:
        return trainer_stats(self.agent.state(self.trainer))


def evaluate_metrics(
    agent: GraphAgent,
    records: list[Metrics],
    *,
    every: int = 1,
    limit: int | None = None,
    on_decision: Callable[[AgentDecision], None] | None = None,
) -> dict:
    """Decide on every ``every``-th record (at most ``limit`` decisions); the agent's stats."""
    chosen = records[::every][:limit]
    for m in chosen:
        d = agent.decide(m.trainer, m)
        if on_decision:
            on_decision(d)
    return trainer_stats(agent.state(chosen[0].trainer)) if chosen else {}


def render(
    messages_of, records: list[Metrics], at: int, history_decider: str = "never"
) -> list[dict]:
    """The messages for record ``at``, with the history a ``history_decider`` agent built.

    ``messages_of(current, history_lines)`` is the LLM model's message builder.
    """
    at %= len(records)
    agent = GraphAgent(lambda: RuleModel(make_decider(history_decider)))
    for m in records[:at]:
        agent.decide(m.trainer, m)
    history = (agent.state(records[at].trainer).get("history") or []) if at else []
    lines = [history_line(r) for r in history[-HISTORY_LINES:]]
    return messages_of(records[at].to_dict(), lines)
