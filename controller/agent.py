"""What the sidecar serves: an :class:`Agent` answers replace/skip for each of its trainers.

The sidecar (``controller/server.py``) owns the ZeroMQ socket and calls an Agent from worker
threads: ``decide`` may run concurrently for different trainers, never twice at once for the
same trainer. The LangGraph agent (``controller/graph.py``) implements it, and so do the test
fakes (``tests/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Callable
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

    def stats(self) -> dict[int, dict]:
        """Live statistics per trainer (Pass@1, valid %, replace %, latency, ...)."""
        ...

    def close(self) -> None:
        """Release models, files and checkpoints."""
        ...
