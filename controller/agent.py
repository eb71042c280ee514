"""What the sidecar serves: an :class:`Agent` answers replace/skip for each of its trainers.

The sidecar (``controller/server.py``) owns the ZeroMQ socket and calls an Agent from worker
threads: ``decide`` may run concurrently for different trainers, never twice at once for the
same trainer; ``stats`` and ``release`` come from the sidecar's loop and must be quick. The
LangGraph agent (``controller/graph.py``) implements it, and so do the test
fakes (``tests/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol, runtime_checkable

from rudder.decisions import Decision
from rudder.protocol import AgentDecision, Metrics


@runtime_checkable
class Agent(Protocol):
    """Per-trainer decision making, with each trainer's own history."""

    def hello(self, trainer: int, info: dict) -> None:
        """A trainer (re)connected; ``info`` holds static facts (graph, partition, buffer)."""
        ...

    def decide(
        self,
        trainer: int,
        metrics: Metrics,
        early: Callable[[Decision], None] | None = None,
    ) -> AgentDecision:
        """Decide for ``trainer`` from its latest metrics (blocking; may take seconds).

        An agent that knows the decision before it has finished (the rest of a streamed
        answer) calls ``early`` with it once; the sidecar answers the trainer then.
        """
        ...

    def stats(self, trainers: Collection[int] | None = None) -> dict[int, dict]:
        """Live statistics of ``trainers`` (default: all it knows): Pass@1, valid %, latency.

        Called from the sidecar's loop for the trainers one stats reply lists: keep it cheap
        (no model call, no I/O per trainer where it can be avoided).
        """
        ...

    def release(self, trainer: int) -> None:
        """The sidecar forgot ``trainer`` (bye or expiry): free what is kept for it.

        Its statistics may stay (bounded); called from the loop, never during its own call.
        """
        ...

    def close(self) -> None:
        """Release models, files and checkpoints."""
        ...
