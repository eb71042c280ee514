"""Agents without a model, for the tests of the sidecar and its client (``from tests.fakes``).

:class:`RuleAgent` wraps a :class:`~rudder.decisions.Decider` (``always``, ``never``,
``every:P``, ``heuristic``) as an :class:`~rudder.controller.agent.Agent` with one decider
instance per trainer, without LangGraph (``rudder agent serve`` serves rules through the
LangGraph agent). The others are fakes: :class:`InstantAgent` answers at once,
:class:`SlowAgent` takes ``delay_s`` per decision, :class:`FailingAgent` raises. All of them
record what they were asked.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from rudder.decisions import Decider, Decision, implied_effects
from rudder.protocol import AgentDecision, Metrics
from rudder.rules import make_decider


def rule_decision(trainer: int, seq: int, decision: Decision | str, reason: str) -> AgentDecision:
    """A valid AgentDecision with the rule deciders' expected directions."""
    hits, comm = implied_effects(decision)
    return AgentDecision(
        trainer=trainer,
        minibatch=seq,
        decision=Decision(decision),
        valid=True,
        reason=reason,
        expected_hit_pct=hits,
        expected_communication=comm,
    )


class _Recording:
    """Bookkeeping shared by the agents here: hellos, decisions, per-trainer counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hellos: list[tuple[int, dict]] = []
        self.seen: list[tuple[int, int]] = []  # (trainer, minibatch) of every decide call
        self._counts: dict[int, list[int]] = {}  # trainer -> [decisions, replace]
        self.released: list[int] = []
        self.closed = False

    def hello(self, trainer: int, info: dict) -> None:
        with self._lock:
            self.hellos.append((trainer, dict(info)))

    def _record(self, trainer: int, metrics: Metrics, decision: AgentDecision) -> AgentDecision:
        with self._lock:
            self.seen.append((trainer, metrics.minibatch))
            counts = self._counts.setdefault(trainer, [0, 0])
            counts[0] += 1
            counts[1] += decision.decision is Decision.REPLACE
        return decision

    def stats(self, trainers=None) -> dict[int, dict]:
        with self._lock:
            return {
                t: {"decisions": n, "replace": r, "replace_pct": 100.0 * r / n if n else 0.0}
                for t, (n, r) in self._counts.items()
                if trainers is None or t in trainers
            }

    def release(self, trainer: int) -> None:
        with self._lock:
            self.released.append(trainer)

    def close(self) -> None:
        self.closed = True


class RuleAgent(_Recording):
    """A rule decider (``always``, ``never``, ``every:P``, ``heuristic``) as an Agent.

    Each trainer gets its own decider instance (the heuristic keeps history); a hello with a
    new run id starts that trainer afresh, a hello after a reconnect keeps its history.
    """

    def __init__(self, spec: str):
        super().__init__()
        self.spec = make_decider(spec).spec  # validates the spec now, not at the first decision
        self._deciders: dict[int, tuple[str, Decider]] = {}

    def hello(self, trainer: int, info: dict) -> None:
        super().hello(trainer, info)
        run_id = str(info.get("run_id", ""))
        with self._lock:
            known = self._deciders.get(trainer)
            if known is None or known[0] != run_id:
                self._deciders[trainer] = (run_id, make_decider(self.spec))

    def decide(self, trainer: int, metrics: Metrics, early=None) -> AgentDecision:
        with self._lock:
            entry = self._deciders.get(trainer)
            if entry is None:
                entry = self._deciders[trainer] = ("", make_decider(self.spec))
        choice = entry[1].decide(metrics)  # the server never runs two of these for one trainer
        answer = rule_decision(trainer, metrics.minibatch, choice, f"rule {self.spec}")
        with self._lock:  # counts only: a long-lived sidecar keeps no log of every call
            counts = self._counts.setdefault(trainer, [0, 0])
            counts[0] += 1
            counts[1] += choice is Decision.REPLACE
        return answer


class InstantAgent(_Recording):
    """Answers ``decision`` at once (benchmarks: the server's own overhead)."""

    def __init__(self, decision: str = "skip"):
        super().__init__()
        self.decision = decision

    def decide(self, trainer: int, metrics: Metrics, early=None) -> AgentDecision:
        answer = rule_decision(trainer, metrics.minibatch, self.decision, "instant")
        return self._record(trainer, metrics, answer)


class SlowAgent(_Recording):
    """Takes ``delay_s`` per decision, like an LLM would; ``close()`` cuts waits short.

    With ``early_s`` it knows the decision after ``early_s`` and says so through ``early``
    (like a streamed, decision-first answer), then takes the rest of ``delay_s`` to finish.
    """

    def __init__(self, delay_s: float, decision: str = "replace", early_s: float | None = None):
        super().__init__()
        self.delay_s = delay_s
        self.decision = decision
        self.early_s = early_s
        self._release = threading.Event()

    def decide(self, trainer: int, metrics: Metrics, early=None) -> AgentDecision:
        t0 = time.monotonic()
        if self.early_s is not None and early is not None:
            self._release.wait(self.early_s)
            early(Decision(self.decision))
        self._release.wait(max(0.0, self.delay_s - (time.monotonic() - t0)))
        answer = rule_decision(trainer, metrics.minibatch, self.decision, "slow")
        answer = dataclasses.replace(answer, latency_s=time.monotonic() - t0)
        return self._record(trainer, metrics, answer)

    def close(self) -> None:
        self._release.set()
        super().close()


class FailingAgent(_Recording):
    """Raises ``error`` from every ``decide`` (the server must answer skip and keep going)."""

    def __init__(self, error: Exception | None = None):
        super().__init__()
        self.error = error or RuntimeError("the model server is down")

    def decide(self, trainer: int, metrics: Metrics, early=None) -> AgentDecision:
        with self._lock:
            self.seen.append((trainer, metrics.minibatch))
        raise self.error
