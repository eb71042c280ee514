"""The agent's state for one trainer: a LangGraph thread, checkpointed between decisions.

Lists are bounded (reducers keep the last N), so a checkpoint stays a few kilobytes however
long training runs.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

RECENT = 16  # metrics records kept
HISTORY = 32  # evaluated decisions kept
LATENCIES = 256  # decision latencies kept, for p50/p95


def keep_last(n: int):
    """A reducer that appends the update and keeps the last ``n`` items."""

    def reduce(old: list | None, new: list | None) -> list:
        return ((old or []) + (new or []))[-n:]

    return reduce


class Counts(TypedDict):
    """Running totals behind the live statistics."""

    decisions: int
    valid: int
    invalid: int
    replace: int
    skip: int
    evaluated: int  # decisions whose effect was observed (over a window, effects.py)
    pass_hit: int  # ... whose predicted %-hits direction was right (Pass@1 %-hits)
    pass_comm: int  # ... whose predicted communication direction was right
    # The same decisions scored for the predictors a Pass@1 is read against (effects.BASELINES)
    baseline_replace_hit: int
    baseline_replace_comm: int
    baseline_skip_hit: int
    baseline_skip_comm: int
    baseline_heuristic_hit: int
    baseline_heuristic_comm: int


ZERO_COUNTS: Counts = Counts(
    decisions=0,
    valid=0,
    invalid=0,
    replace=0,
    skip=0,
    evaluated=0,
    pass_hit=0,
    pass_comm=0,
    baseline_replace_hit=0,
    baseline_replace_comm=0,
    baseline_skip_hit=0,
    baseline_skip_comm=0,
    baseline_heuristic_hit=0,
    baseline_heuristic_comm=0,
)


class AgentState(TypedDict, total=False):
    """One trainer's agent state.

    A decision goes through three stages: ``pending`` (made on metrics of minibatch i, not yet
    applied), ``awaiting`` (the next metrics came from the minibatch j it was applied at; their
    window is its "before"), then evaluated into ``history`` once metrics of a minibatch at
    least a window after j arrive (``controller.effects``). Several decisions await at once.
    """

    trainer: int
    info: dict  # static facts from the trainer's hello
    incoming: dict  # the metrics record to decide on (the graph's input)
    recent: Annotated[list[dict], keep_last(RECENT)]
    history: Annotated[list[dict], keep_last(HISTORY)]
    pending: dict | None
    awaiting: list[dict]
    heuristic: str | None  # the heuristic's decision on the same metrics (a Pass@1 baseline)
    answer: Any  # the model's raw answer this round (text or a dict)
    answer_error: str | None
    latency_s: float  # until the decision was known (early, from a decision-first answer)
    answer_s: float  # until the whole answer was
    early: str | None  # the decision the model announced before finishing (already acted on)
    latencies: Annotated[list[float], keep_last(LATENCIES)]
    answer_latencies: Annotated[list[float], keep_last(LATENCIES)]
    counts: Counts
    result: dict  # this round's decision (an AgentDecision as a dict)
