"""Replay: run any policy and decider over a recorded access trace, in virtual time.

Time is counted in minibatches. A decider's answer to the metrics of minibatch ``i`` takes
effect at minibatch ``i + latency``. While an answer is in flight, the metrics of the
minibatches in between are not sent: they are dropped (the paper's stale-request drop), and
the next request carries the freshest metrics once the answer has landed. ``latency=1`` is the
synchronous case: every minibatch's metrics decide the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from rudder.decisions import Decider
from rudder.rules import make_decider
from rudder.trainer_hooks.channel import DecisionChannel, TimedChannel, TimedDecider, Untimed
from rudder.trainer_hooks.hook import MinibatchHook, decider_for
from rudder.trainer_hooks.metrics import DEFAULT_WINDOW, Accounting, Metrics, Totals
from rudder.trainer_hooks.policies.base import PolicyContext
from rudder.trainer_hooks.policies.offline import by_popularity, next_use
from rudder.trainer_hooks.policies.registry import (
    OFFLINE_POLICIES,
    PolicySpec,
    ScoredOptions,
    builtin_decider,
    make_policy,
)
from rudder.trainer_hooks.trace import AccessTrace

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True)
class ReplayConfig:
    """How to replay: buffer size, the ``rudder`` policy's decider, its latency."""

    buffer_fraction: float
    decider: str = "heuristic"
    latency: int = 1  # minibatches between a request and its decision taking effect
    # The agent's decisions land after `latency` minibatches, as if the trainer waited for
    # them (sync mode), not after their measured seconds in the trace's time.
    agent_sync: bool = False
    scored: ScoredOptions = field(default_factory=ScoredOptions)
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise ValueError(f"buffer fraction must lie in [0, 1], got {self.buffer_fraction}")
        if self.latency < 1:
            raise ValueError(f"latency is in minibatches and must be >= 1, got {self.latency}")
        make_decider(self.decider)  # fail early on a bad spec


@dataclass(slots=True)
class ReplayResult:
    """One policy's run over one trace."""

    policy: str
    decider: str | None
    capacity: int
    totals: Totals
    latency: int | None = None
    decisions: int = 0  # decisions that took effect
    replace_decisions: int = 0
    dropped_requests: int = 0
    replacement_interval: float = 0.0
    latency_p50_s: float | None = None  # of a timed decider's answers (the agent)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("totals"))
        d["hit_rate"] = self.totals.hit_rate
        d["ids_per_second"] = self.totals.remote_inputs / self.seconds if self.seconds else 0.0
        return d


def context_for(trace: AccessTrace, specs: Sequence[PolicySpec]) -> PolicyContext:
    """What the named policies need from the trace (the future only for offline bounds)."""
    offline = any(s.name in OFFLINE_POLICIES for s in specs)
    return PolicyContext(
        prefill_ranking=trace.prefill_ranking,
        future=next_use(trace.offsets, trace.ids) if offline else None,
        distinct_ids=trace.distinct_ids() if offline else None,
        popular=by_popularity(trace.ids) if offline else None,
    )


def replay(
    trace: AccessTrace,
    spec: str | PolicySpec,
    config: ReplayConfig,
    ctx: PolicyContext | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
    decider: Decider | TimedDecider | None = None,
) -> ReplayResult:
    """Run one policy over the trace; ``on_metrics`` sees every minibatch's metrics.

    ``decider`` overrides ``config.decider`` for the ``rudder`` policy. A :class:`TimedDecider`
    (the agent) answers in virtual time: each answer lands after its measured latency against
    the trace's recorded minibatch times, instead of after ``config.latency`` minibatches.
    """
    spec = PolicySpec.parse(spec) if isinstance(spec, str) else spec
    ctx = ctx or context_for(trace, [spec])
    meta = trace.meta
    policy = make_policy(spec, meta.capacity(config.buffer_fraction), ctx, options=config.scored)
    acct = Accounting(
        trainer=meta.trainer,
        capacity=policy.capacity,
        row_bytes=meta.row_bytes,
        total_minibatches=trace.num_minibatches,
        window=config.window,
    )
    decider_spec = decider_for(policy, spec, config.decider)
    label = str(decider_spec) if decider_spec is not None else None
    channel: DecisionChannel | None = None
    if decider_spec is not None:
        rule = builtin_decider(spec)
        if rule is None and decider is not None:
            label = decider.spec  # a caller's decider: any name
        else:
            decider = make_decider(decider_spec)
        if rule is None and hasattr(decider, "decide_timed"):
            if config.agent_sync:
                channel = DecisionChannel(Untimed(decider), config.latency)
            else:
                times = (trace.sample_s + trace.fetch_s + trace.compute_s).tolist()
                channel = TimedChannel(decider, times)
        else:
            latency = config.latency if rule is None else 1  # baselines decide locally, at once
            channel = DecisionChannel(decider, latency)
    hook = MinibatchHook(policy, acct, channel, listeners=[on_metrics] if on_metrics else [])

    start = time.perf_counter()
    hook.prefill()
    for t in range(trace.num_minibatches):
        ids = trace.batch(t)
        hook.record(
            hook.plan(ids),
            ids,
            epoch=int(trace.epochs[t]),
            local_inputs=int(trace.local_counts[t]),
            sample_s=float(trace.sample_s[t]),
            fetch_s=float(trace.fetch_s[t]),
            compute_s=float(trace.compute_s[t]),
        )
    seconds = time.perf_counter() - start

    result = ReplayResult(
        policy=policy.label,
        decider=label,
        capacity=policy.capacity,
        totals=acct.totals,
        seconds=seconds,
    )
    if isinstance(channel, TimedChannel):
        lat = sorted(channel.latencies_s)
        result.latency_p50_s = lat[len(lat) // 2] if lat else None
    if channel:
        result.latency = None if isinstance(channel, TimedChannel) else channel.latency
        d = hook.decisions()
        result.decisions = d["decisions"]
        result.replace_decisions = d["replace_decisions"]
        result.dropped_requests = d["dropped_requests"]
        result.replacement_interval = d["replacement_interval"]
    log.debug("replayed %s in %.2fs", policy.label, seconds)
    return result
