"""The wire protocol between trainers and the decision agent: one module, both sides import it.

This first part holds the message bodies that both sides share; the ZeroMQ framing, message
kinds, versioning and codec live below them (see docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metrics:
    """What a trainer knows after one minibatch; the body of a metrics message."""

    trainer: int
    minibatch: int  # 0-based index of this minibatch in the run
    epoch: int
    total_minibatches: int  # minibatches in the whole run (0 if unknown)
    remote_inputs: int  # remote input nodes of this minibatch
    local_inputs: int
    hits: int
    misses: int
    extra_rows: int  # rows pulled only to fill the buffer (replacement or prefill)
    rows_fetched: int  # misses + extra_rows
    bytes_fetched: int
    hit_pct: float  # this minibatch, 0..100
    hit_pct_window: float  # the last `window` minibatches
    hit_pct_cumulative: float
    rows_fetched_window: float  # mean rows fetched per minibatch over the window
    replaced: int  # entries this minibatch's replacement round put in (0 without a round)
    last_replaced: int  # entries the latest round put in
    last_replaced_pct: float  # ... as % of capacity
    since_replacement: int  # minibatches since the latest round (-1: none yet)
    replacements: int  # rounds so far
    buffer_capacity: int
    buffer_fill: int
    stale_slots: int  # slots a round could refill now (free ones included)
    sample_s: float = 0.0
    fetch_s: float = 0.0
    compute_s: float = 0.0

    @property
    def remaining_minibatches(self) -> int:
        return max(self.total_minibatches - self.minibatch - 1, 0)

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Metrics:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown metrics fields: {sorted(unknown)}")
        return cls(**data)


DECISIONS = ("replace", "skip")
DIRECTIONS = ("increase", "decrease", "stagnant")


@dataclass(frozen=True, slots=True)
class AgentDecision:
    """What the agent answers for one trainer: the body of a decision message."""

    trainer: int
    minibatch: int  # the minibatch whose metrics the decision was made on
    decision: str  # "replace" or "skip" (an invalid answer is "skip")
    valid: bool  # the decider's answer was well-formed
    reason: str = ""
    expected_hit_pct: str | None = None  # "increase", "decrease" or "stagnant"
    expected_communication: str | None = None
    latency_s: float = 0.0  # from the metrics arriving to the decision being ready

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        for name in ("expected_hit_pct", "expected_communication"):
            value = getattr(self, name)
            if value is not None and value not in DIRECTIONS:
                raise ValueError(f"{name} must be one of {DIRECTIONS}, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
