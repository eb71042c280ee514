"""The typed bodies and messages of the agent protocol: plain frozen dataclasses, no msgpack.

Each wire field is declared exactly once, here, with its type; the codec
(:mod:`rudder.protocol.codec`) reads these annotations to check and build messages. Value
checks beyond the type (a mode, a reason, a decision's directions) live in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from rudder.decisions import DIRECTIONS, Decision

DECISIONS: tuple[str, ...] = tuple(d.value for d in Decision)  # the wire values of Decision
METRICS_VERSION = 3  # 2: the grounding fields (window, round_*, repeat_miss_pct); 3: round outcomes
MODES = ("async", "sync")

# The typed reasons an `error` message (and a ProtocolError) carries.
ERROR_REASONS = (
    "malformed",  # not msgpack, trailing bytes, or nested too deep (codec.MAX_DEPTH)
    "not_a_map",  # msgpack, but not a map at the top
    "unsupported_version",  # "v" missing, not an int, or not one of SUPPORTED_VERSIONS
    "unknown_kind",  # "kind" missing or not one of KINDS
    "bad_field",  # a field missing, unknown, of the wrong type or value
    "oversized",  # more than MAX_MESSAGE_BYTES
    "unexpected_kind",  # a valid message this side does not accept (a decision sent to the agent)
    "unknown_trainer",  # metrics from a trainer that has not said hello (re-send hello)
    "too_many_trainers",  # a hello beyond the agent's cap on tracked trainers (retry later)
    "internal",  # the other side failed to answer (a bug there)
)


# -- bodies ------------------------------------------------------------------------------------


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
    # Version 2: the grounding (trainer_hooks.round_preview). What a replacement round after
    # this minibatch would do, and how the access moves, over the last `window` minibatches.
    window: int = 0  # minibatches behind the windowed figures (0: not reported)
    hit_pct_prev_window: float = 0.0  # %-hits of the `window` minibatches before those
    repeat_miss_pct: float = 0.0  # % of this minibatch's misses also missed in the window
    round_swap_rows: int = 0  # rows a round would put in now
    round_evict_rows: int = 0  # ... of them evicting an entry (the rest fill free slots)
    round_evict_use: float = 0.0  # mean hits per row it would evict, over the window
    round_admit_use: float = 0.0  # mean misses per row it would admit, over the window
    # Version 3: what the rounds of the last `window` minibatches did since
    # (trainer_hooks.round_outcome): the outcome a round's forecast above cannot see.
    round_rows_window: int = 0  # rows those rounds put in (0: no round ran, nothing observed)
    round_admit_hits: int = 0  # hits since on the rows they put in
    round_ghost_misses: int = 0  # misses since on the rows they took out (pulls they caused)

    @property
    def remaining_minibatches(self) -> int:
        return max(self.total_minibatches - self.minibatch - 1, 0)

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Metrics:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not ignored.

        A record of an older version (written before the grounding fields existed) is an error
        too: its deciders' inputs would silently read as zeros.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown metrics fields: {sorted(unknown)}")
        for version, field_name in ((1, "window"), (2, "round_rows_window")):
            if field_name not in data:
                raise ValueError(
                    f"a metrics record of version {version} (no {field_name!r} field); this "
                    f"reader needs version {METRICS_VERSION}: record it again with this Rudder"
                )
        return cls(**data)


@dataclass(frozen=True, slots=True)
class AgentDecision:
    """What the agent answers for one trainer: the body of a decision message.

    ``decision`` is a :class:`~rudder.decisions.Decision` (on the wire: its value, "replace" or
    "skip"); a plain string is accepted and turned into one, anything else is a ValueError.
    """

    trainer: int
    minibatch: int  # the minibatch whose metrics the decision was made on
    decision: Decision  # an invalid answer is Decision.SKIP
    valid: bool  # the decider's answer was well-formed
    reason: str = ""
    expected_hit_pct: str | None = None  # "increase", "decrease" or "stagnant"
    expected_communication: str | None = None
    latency_s: float = 0.0  # from the metrics arriving to the decision being ready

    def __post_init__(self) -> None:
        if type(self.decision) is not Decision:
            try:
                object.__setattr__(self, "decision", Decision(self.decision))
            except ValueError:
                raise ValueError(
                    f"decision must be one of {list(DECISIONS)}, got {self.decision!r}"
                ) from None
        for name in ("expected_hit_pct", "expected_communication"):
            value = getattr(self, name)
            if value is not None and value not in DIRECTIONS:
                raise ValueError(f"{name} must be one of {DIRECTIONS}, got {value!r}")

    def to_dict(self) -> dict:
        """The fields as a dict (``decision`` stays a str enum: JSON writes its value)."""
        return dataclasses.asdict(self)


@dataclass(kw_only=True, frozen=True, slots=True)
class TrainerInfo:
    """Static facts a trainer tells its agent in ``hello`` (zero where unknown)."""

    graph: str = ""
    num_nodes: int = 0
    num_edges: int = 0
    num_parts: int = 0
    part_id: int = 0
    local_nodes: int = 0  # nodes this partition owns
    remote_nodes: int = 0  # remote nodes the partition can reach (buffer fractions are of this)
    buffer_capacity: int = 0  # rows
    total_minibatches: int = 0  # in the whole run
    minibatches_per_epoch: int = 0
    batch_size: int = 0
    feat_dim: int = 0

    def to_dict(self) -> dict[str, int | str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainerInfo:
        """Rebuild from :meth:`to_dict` output, checking every field's type (ProtocolError)."""
        from rudder.protocol.codec import from_wire  # the codec imports this module

        return from_wire(cls, data, "info")


# -- messages ----------------------------------------------------------------------------------


@dataclass(kw_only=True, frozen=True, slots=True)
class Hello:
    """trainer -> agent: a trainer (re)connected; sent again after every reconnect."""

    KIND: ClassVar[str] = "hello"
    trainer: int
    run_id: str = ""
    mode: str = "async"  # how the trainer waits for decisions: "async" or "sync"
    info: TrainerInfo = TrainerInfo()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(kw_only=True, frozen=True, slots=True)
class MetricsReport:
    """trainer -> agent: the metrics of minibatch ``seq`` (a request for a decision)."""

    KIND: ClassVar[str] = "metrics"
    trainer: int
    seq: int  # the minibatch id; the decision echoes it
    metrics: Metrics

    def __post_init__(self) -> None:
        if self.metrics.trainer != self.trainer or self.metrics.minibatch != self.seq:
            raise ValueError(
                f"metrics of trainer {self.metrics.trainer} minibatch {self.metrics.minibatch} "
                f"sent as trainer {self.trainer} seq {self.seq}"
            )


@dataclass(kw_only=True, frozen=True, slots=True)
class DecisionReply:
    """agent -> trainer: the decision made on the metrics of minibatch ``seq``."""

    KIND: ClassVar[str] = "decision"
    trainer: int
    seq: int
    decision: AgentDecision


@dataclass(kw_only=True, frozen=True, slots=True)
class Ping:
    """Liveness probe (trainer or tool -> agent); answered at once with a pong."""

    KIND: ClassVar[str] = "ping"
    seq: int
    trainer: int | None = None  # None from tools (launcher, `rudder agent stats`)


@dataclass(kw_only=True, frozen=True, slots=True)
class Pong:
    """agent -> pinger: alive; ``registered`` says whether the agent knows this trainer."""

    KIND: ClassVar[str] = "pong"
    seq: int
    trainer: int | None = None
    registered: bool = False  # False after an agent restart: the trainer must say hello again


@dataclass(kw_only=True, frozen=True, slots=True)
class StatsRequest:
    """tool -> agent: send your live statistics."""

    KIND: ClassVar[str] = "stats"
    seq: int


@dataclass(kw_only=True, frozen=True, slots=True)
class StatsReply:
    """agent -> tool: the server's counters and per-trainer statistics (plain values).

    msgpack map keys are strings here (strict_map_key): trainer ids travel as decimal text.
    """

    KIND: ClassVar[str] = "stats_reply"
    seq: int
    server: dict[str, Any]
    trainers: dict[int, dict[str, Any]]


@dataclass(kw_only=True, frozen=True, slots=True)
class ErrorReply:
    """agent -> sender: your message was rejected, and why (``reason`` in ERROR_REASONS)."""

    KIND: ClassVar[str] = "error"
    reason: str
    detail: str = ""
    seq: int | None = None  # the rejected message's seq, where it could be read
    trainer: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in ERROR_REASONS:
            raise ValueError(f"error reason must be one of {ERROR_REASONS}, got {self.reason!r}")


@dataclass(kw_only=True, frozen=True, slots=True)
class Bye:
    """trainer -> agent: done; forget me (the agent keeps its history)."""

    KIND: ClassVar[str] = "bye"
    trainer: int
    reason: str = ""


MESSAGES: tuple[type, ...] = (
    Hello,
    MetricsReport,
    DecisionReply,
    Ping,
    Pong,
    StatsRequest,
    StatsReply,
    ErrorReply,
    Bye,
)
