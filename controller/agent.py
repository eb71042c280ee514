"""What the sidecar serves: an :class:`Agent` answers replace/skip for each of its trainers.

The sidecar (``controller/server.py``) owns the ZeroMQ socket and calls an Agent from worker
threads: ``decide`` may run concurrently for different trainers, never twice at once for the
same trainer. The LangGraph agent (``controller/graph.py``) implements it, and so do the test
fakes (``tests/fakes.py``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rudder.protocol import AgentDecision, Metrics


@runtime_checkable
class Agent(Protocol):
    """Per-trainer decision making, with each trainer's own history."""

    def hello(self, trainer: int, info: dict) -> None:
        """A trainer (re)connected; ``info`` holds static facts (graph, partition, buffer)."""
        ...

    def decide(self, trainer: int, metrics: Metrics) -> AgentDecision:
        """Decide for ``trainer`` from its latest metrics (blocking; may take seconds)."""
        ...

    def stats(self) -> dict[int, dict]:
        """Live statistics per trainer (Pass@1, valid %, replace %, latency, ...)."""
        ...

    def close(self) -> None:
        """Release models, files and checkpoints."""
        ...
