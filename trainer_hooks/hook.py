"""The per-minibatch sequence, written once: decide, step, (move rows), account, offer, record.

Every path through Rudder goes through :class:`MinibatchHook`: replay over a recorded trace
(no rows move), the built-in DistDGL trainer and users' own scripts (through
:class:`~rudder.trainer_hooks.buffered.BufferedFeatures`, which moves the rows). A minibatch
is two calls, so the caller can pull and write rows between them::

    plan = hook.plan(remote_ids)   # the decision in effect now, then the policy's step
    ...                            # serve hits, pull plan.fetch_ids, commit admitted rows
    hook.record(plan, remote_ids, epoch=e, local_inputs=n, fetch_s=...)

``record`` accounts the plan into :class:`Metrics`, offers them to the decision channel (the
next request, or a dropped stale one), appends the minibatch to the trace being recorded and
hands the metrics to the listeners (a metrics file, a progress bar).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rudder.decisions import DeciderSpec
from rudder.protocol import Metrics
from rudder.trainer_hooks.channel import Channel
from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.policies.base import Plan, Policy
from rudder.trainer_hooks.policies.registry import PolicySpec, builtin_decider
from rudder.trainer_hooks.trace import TraceRecorder

log = logging.getLogger(__name__)


def decider_for(policy: Policy, spec: PolicySpec, user: str | DeciderSpec) -> DeciderSpec | None:
    """The decider a policy runs with: a baseline's own rule, the user's for ``rudder``, or None.

    ``static`` is ``never``, ``fixed`` is ``always``, ``periodic:P`` is ``every:P``; policies that
    do not take decisions (no buffer, demand caches, offline bounds) get None.
    """
    if not policy.uses_decisions:
        return None
    rule = builtin_decider(spec)
    return DeciderSpec.parse(rule if rule is not None else user)


@dataclass(slots=True)
class MinibatchHook:
    """One trainer's buffer policy, accounting, decision channel and trace recorder."""

    policy: Policy
    accounting: Accounting
    channel: Channel | None = None
    recorder: TraceRecorder | None = None
    listeners: list[Callable[[Metrics], None]] = field(default_factory=list)
    t: int = 0  # minibatches recorded so far
    _pending: Plan | None = None

    def prefill(self) -> Plan | None:
        """The policy's prefill plan (rows pulled before training), already accounted."""
        plan = self.policy.prefill()
        if plan is not None:
            self.accounting.record_prefill(plan)
        return plan

    def plan(self, remote_ids: np.ndarray) -> Plan:
        """Step the policy over this minibatch's remote ids, with the decision in effect now."""
        if self._pending is not None:
            raise RuntimeError("MinibatchHook.plan called twice without record in between")
        replace = bool(self.channel.decision_for(self.t)) if self.channel else False
        self._pending = self.policy.step(remote_ids, replace)
        return self._pending

    def record(
        self,
        plan: Plan,
        remote_ids: np.ndarray,
        *,
        epoch: int = 0,
        local_inputs: int = 0,
        sample_s: float = 0.0,
        fetch_s: float = 0.0,
        compute_s: float = 0.0,
        phase: int = 0,
    ) -> Metrics:
        """Account the minibatch ``plan`` was made for, offer its metrics, record its trace.

        ``phase`` is 0 for training, 1 for an evaluation pass (``trace.PHASES``); traces keep it.
        """
        if plan is not self._pending:
            raise RuntimeError("MinibatchHook.record: not the plan of the current minibatch")
        self._pending = None
        m = self.accounting.record(
            plan,
            epoch=epoch,
            local_inputs=local_inputs,
            buffer_fill=self.policy.buffer.size,
            preview=self.policy.preview() if self.channel else None,
            outcome=self.policy.outcome() if self.channel else None,
            sample_s=sample_s,
            fetch_s=fetch_s,
            compute_s=compute_s,
        )
        if self.channel is not None:
            self.channel.offer(m)
        if self.recorder is not None:
            self.recorder.add(remote_ids, local_inputs, epoch, sample_s, fetch_s, phase)
        for listener in self.listeners:
            listener(m)
        self.t += 1
        return m

    def decisions(self) -> dict:
        """Decisions that took effect, the replace share and the replacement interval."""
        ch = self.channel
        applied = ch.applied if ch is not None else []
        return {
            "decisions": len(applied),
            "replace_decisions": sum(bool(d) for _, d in applied),
            "dropped_requests": ch.dropped if ch is not None else 0,
            "replacement_interval": ch.replacement_interval() if ch is not None else 0.0,
        }
