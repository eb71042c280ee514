"""How decisions reach the buffer: one request in flight, stale requests dropped.

:class:`DecisionChannel` is the trainer-to-decider link for deciders that run in the trainer
(rules, heuristics) and, in replay, for any decider in virtual time. Time is counted in
minibatches: the answer to the metrics of minibatch ``i`` takes effect at ``i + latency``;
metrics offered while an answer is in flight are dropped, and the next request carries the
freshest metrics once the answer has landed. A remote agent's client offers the same two
methods, ``decision_for(t)`` and ``offer(metrics)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from rudder.decisions import Decider, DeciderSpec, Decision, replacement_interval
from rudder.protocol import Metrics
from rudder.rules import make_decider

if TYPE_CHECKING:
    from rudder.trainer_hooks.options import RudderConfig


class Channel(Protocol):
    """Where a trainer's decisions come from: this module's channels or the agent's client."""

    dropped: int  # metrics not sent because a request was in flight (stale-request drop)

    @property
    def applied(self) -> list[tuple[int, Decision]]:
        """(minibatch, decision) of every decision that took effect."""
        ...

    def decision_for(self, t: int) -> Decision:
        """The decision in effect at minibatch ``t`` (skip unless one lands now)."""
        ...

    def offer(self, metrics: Metrics) -> None:
        """The metrics of the minibatch just done: a request, unless one is in flight."""
        ...

    def replacement_interval(self) -> float:
        """Mean gap, in minibatches, between consecutive decisions taking effect."""
        ...


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
        return replacement_interval([t for t, _ in self.applied])


class TimedDecider(Protocol):
    """A decider whose answers take measurable time (the agent, run in-process)."""

    spec: str

    def decide_timed(self, metrics: Metrics) -> tuple[Decision, float]:
        """The decision and the seconds it took."""
        ...


class TimedChannel(DecisionChannel):
    """The trainer-to-agent link in virtual time, with each answer's measured latency.

    A request is made after minibatch ``i``; minibatch ``i+1`` starts at once. The answer,
    ready ``latency`` seconds later, applies to the first minibatch that starts after that,
    using the recorded per-minibatch times (``minibatch_s[k]``: sampling + fetch + compute of
    minibatch ``k``). An instant answer lands at ``i+1`` (the synchronous case); requests made
    while one is in flight are dropped, as in :class:`DecisionChannel`.
    """

    def __init__(self, decider: TimedDecider, minibatch_s: Sequence[float]):
        super().__init__(Untimed(decider), latency=1)
        self.timed = decider
        self.minibatch_s = minibatch_s
        self.latencies_s: list[float] = []

    def offer(self, metrics: Metrics) -> None:
        if self._in_flight is not None:
            self.dropped += 1
            return
        self.requests += 1
        decision, latency = self.timed.decide_timed(metrics)
        self.latencies_s.append(latency)
        i = metrics.minibatch
        due, elapsed = i + 1, 0.0
        while elapsed < latency and due < len(self.minibatch_s):
            elapsed += self.minibatch_s[due]  # minibatch `due` runs while the agent thinks
            due += 1
        self._in_flight = (due, decision)


class Untimed(Decider):
    """A :class:`TimedDecider` where a plain decider is expected (``first()`` included).

    Its answers land when the channel says, not after their measured time.
    """

    name = "timed"

    def __init__(self, timed: TimedDecider):
        self.timed = timed

    @property
    def spec(self) -> str:
        return self.timed.spec

    def decide(self, metrics: Metrics) -> Decision:
        return self.timed.decide_timed(metrics)[0]


def open_channel(
    config: RudderConfig, spec: DeciderSpec, rank: int, decider: Decider | None = None
) -> Channel:
    """Where a trainer's decisions come from: in process, or this machine's agent sidecar.

    Rules (and a caller's ``decider`` object) run in process and answer at once; the agent's
    deciders (``llm``, ``classifier:PATH``), or any decider with ``agent="sidecar"``, are
    asked over ZeroMQ at ``config.agent_endpoint``, sync or async. Baselines' own rules
    (``fixed``, ``periodic``, ``static``) always decide in process.
    """
    if decider is None and (config.uses_sidecar and str(spec) == config.decider):
        if not config.agent_endpoint:
            raise ValueError(
                f"decider {spec} runs in this machine's agent sidecar, but no endpoint is set: "
                "start one (`rudder agent serve --endpoint ipc:///path.sock`) and pass "
                "agent_endpoint=... or RUDDER_AGENT_ENDPOINT"
            )
        from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig

        return AgentClient(
            ClientConfig(
                endpoint=config.agent_endpoint,
                trainer=rank,
                run_id=config.run_id,
                mode=config.agent_mode,
            )
        )
    return DecisionChannel(decider if decider is not None else make_decider(spec), latency=1)
