"""How decisions reach the buffer: one request in flight, stale requests dropped.

:class:`DecisionChannel` is the trainer-to-decider link for deciders that run in the trainer
(rules, heuristics) and, in replay, for any decider in virtual time. Time is counted in
minibatches: the answer to the metrics of minibatch ``i`` takes effect at ``i + latency``;
metrics offered while an answer is in flight are dropped, and the next request carries the
freshest metrics once the answer has landed. A remote agent's client offers the same two
methods, ``decision_for(t)`` and ``offer(metrics)``.
"""

from __future__ import annotations

from rudder.protocol import Metrics
from rudder.trainer_hooks.deciders import Decider, Decision


class DecisionChannel:
    """The trainer-to-decider link in virtual time: one request in flight, stale ones dropped."""

    def __init__(self, decider: Decider, latency: int):
        self.decider = decider
        self.latency = latency
        self._in_flight: tuple[int, Decision] | None = None
        self._next = decider.first()  # minibatch 0's decision needs no metrics
        self.requests = 0
        self.dropped = 0
        self.applied: list[tuple[int, Decision]] = []

    def decision_for(self, t: int) -> Decision:
        """The decision in effect at minibatch ``t`` (skip unless one lands now)."""
        if t == 0:
            self.applied.append((0, self._next))
            return self._next
        if self._in_flight is not None and self._in_flight[0] == t:
            _, decision = self._in_flight
            self._in_flight = None
            self.applied.append((t, decision))
            return decision
        return Decision.SKIP

    def offer(self, metrics: Metrics) -> None:
        """Send the metrics of the minibatch just done, unless a request is still in flight."""
        if self._in_flight is not None:
            self.dropped += 1
            return
        self.requests += 1
        self._in_flight = (metrics.minibatch + self.latency, self.decider.decide(metrics))

    def replacement_interval(self) -> float:
        """Mean gap, in minibatches, between consecutive decisions taking effect."""
        ts = [t for t, _ in self.applied]
        return (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else 0.0
