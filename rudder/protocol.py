"""The wire protocol between trainers and the decision agent: one module, both sides import it.

This first part holds the message bodies that both sides share; the ZeroMQ framing, message
kinds, versioning and codec live below them (see docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import msgpack


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


# --------------------------------------------------------------------------------------------
# The wire: ZeroMQ frames carrying msgpack maps (docs/protocol.md)
#
# A trainer's DEALER talks to its node's sidecar ROUTER. Every message is one frame: a msgpack
# map with the protocol version "v", a "kind" and that kind's fields. Nothing is ever pickled:
# a peer can only make us build ints, floats, strings, bools, lists and maps, which are then
# checked field by field against the typed dataclasses below.
# --------------------------------------------------------------------------------------------


PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
MAX_MESSAGE_BYTES = 64 * 1024  # also the agent socket's zmq.MAXMSGSIZE: monsters never arrive
MODES = ("async", "sync")

# The typed reasons an `error` message (and a ProtocolError) carries.
ERROR_REASONS = (
    "malformed",  # not msgpack, or trailing bytes
    "not_a_map",  # msgpack, but not a map at the top
    "unsupported_version",  # "v" missing, not an int, or not one of SUPPORTED_VERSIONS
    "unknown_kind",  # "kind" missing or not one of KINDS
    "bad_field",  # a field missing, unknown, of the wrong type or value
    "oversized",  # more than MAX_MESSAGE_BYTES
    "unexpected_kind",  # a valid message this side does not accept (a decision sent to the agent)
    "unknown_trainer",  # metrics from a trainer that has not said hello (re-send hello)
    "internal",  # the other side failed to answer (a bug there)
)


class ProtocolError(ValueError):
    """A message that is not valid protocol; ``reason`` is one of :data:`ERROR_REASONS`.

    ``kind``, ``seq`` and ``trainer`` hold what could be read of the message before it was
    rejected (None otherwise), so the receiver can address its ``error`` reply.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        kind: str | None = None,
        seq: int | None = None,
        trainer: int | None = None,
    ):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.kind = kind
        self.seq = seq
        self.trainer = trainer


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
        return {name: getattr(self, name) for name in _spec(TrainerInfo)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainerInfo:
        """Rebuild from :meth:`to_dict` output, checking every field's type."""
        return _build(cls, data, "info")


# -- strict field checks, from the dataclasses' own annotations --------------------------------

_EXACT: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_SPECS: dict[type, dict[str, tuple[str, bool, bool]]] = {}
_REQUIRED: dict[type, frozenset[str]] = {}
_CONVERT: dict[type, tuple[tuple[str, type | None], ...]] = {}


def _spec(cls: type) -> dict[str, tuple[str, bool, bool]]:
    """Map name -> (base type, None allowed, required), read once from ``cls``'s annotations."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = {}
        for f in dataclasses.fields(cls):
            parts = [p.strip() for p in str(f.type).split("|")]
            base = next(p for p in parts if p != "None")
            if base not in _EXACT:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {f.type}")
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            spec[f.name] = (base, "None" in parts, required)
        _SPECS[cls] = spec
        _REQUIRED[cls] = frozenset(n for n, (_, _, req) in spec.items() if req)
        _CONVERT[cls] = tuple(
            (n, _EXACT[b] if b in ("int", "float") else None) for n, (b, _, _) in spec.items()
        )
    return spec


def _check(where: str, name: str, base: str, nullable: bool, value: object) -> object:
    """``value`` if it has the wire type ``base`` (an int is also a float), else ProtocolError."""
    # msgpack builds exact builtin types, so `type(...) is` is the test; bool is not an int here.
    if type(value) is _EXACT[base]:
        return value
    if base == "float" and type(value) is int:
        return float(value)
    if value is None and nullable:
        return None
    want = base + (" or nil" if nullable else "")
    raise ProtocolError(
        "bad_field", f"{where}.{name} must be {want}, got {type(value).__name__} {value!r:.40}"
    )


def _fields(cls: type, data: object, where: str) -> dict[str, object]:
    """The checked keyword arguments for ``cls`` from the map ``data``."""
    if not isinstance(data, dict):
        raise ProtocolError("bad_field", f"{where} must be a map, got {type(data).__name__}")
    spec = _SPECS.get(cls) or _spec(cls)
    if not data.keys() <= spec.keys():
        unknown = sorted(str(k) for k in data if k not in spec)
        raise ProtocolError("bad_field", f"{where} has unknown fields {unknown}")
    if not _REQUIRED[cls] <= data.keys():
        missing = [n for n in spec if n in _REQUIRED[cls] and n not in data]
        raise ProtocolError("bad_field", f"{where} misses required fields {missing}")
    out = {}
    for k, v in data.items():
        base, nullable, _ = spec[k]
        out[k] = v if type(v) is _EXACT[base] else _check(where, k, base, nullable, v)
    return out


def _build(cls: type, data: object, where: str) -> Any:
    kwargs = _fields(cls, data, where)
    try:
        return cls(**kwargs)
    except ValueError as e:  # the dataclass's own checks (a decision that is not replace/skip)
        raise ProtocolError("bad_field", f"{where}: {e}") from None


def _plain(cls: type, obj: object) -> dict[str, object]:
    """``obj``'s fields as wire values: numpy scalars and the like become int/float."""
    if cls not in _CONVERT:
        _spec(cls)
    out: dict[str, object] = {}
    for name, convert in _CONVERT[cls]:
        v = getattr(obj, name)
        if convert is not None and v is not None and type(v) is not convert:
            v = convert(v)
        out[name] = v
    return out


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

    def to_wire(self) -> dict:
        return {
            "trainer": self.trainer,
            "run_id": self.run_id,
            "mode": self.mode,
            "info": self.info.to_dict(),
        }

    @classmethod
    def from_wire(cls, d: dict) -> Hello:
        _only(d, ("trainer", "run_id", "mode", "info"), "hello")
        info = TrainerInfo.from_dict(d["info"]) if "info" in d else TrainerInfo()
        try:
            return cls(
                trainer=_req(d, "trainer", "int", "hello"),
                run_id=_opt(d, "run_id", "str", "hello", ""),
                mode=_opt(d, "mode", "str", "hello", "async"),
                info=info,
            )
        except ValueError as e:
            raise ProtocolError("bad_field", f"hello: {e}") from None


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

    def to_wire(self) -> dict:
        return {"trainer": self.trainer, "seq": self.seq, "metrics": _plain(Metrics, self.metrics)}

    @classmethod
    def from_wire(cls, d: dict) -> MetricsReport:
        _only(d, ("trainer", "seq", "metrics"), "metrics")
        trainer, seq = _req(d, "trainer", "int", "metrics"), _req(d, "seq", "int", "metrics")
        if "metrics" not in d:
            raise ProtocolError("bad_field", "metrics misses required fields ['metrics']")
        try:
            return cls(trainer=trainer, seq=seq, metrics=_build(Metrics, d["metrics"], "metrics"))
        except ValueError as e:
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError("bad_field", f"metrics: {e}") from None


@dataclass(kw_only=True, frozen=True, slots=True)
class DecisionReply:
    """agent -> trainer: the decision made on the metrics of minibatch ``seq``."""

    KIND: ClassVar[str] = "decision"
    trainer: int
    seq: int
    decision: AgentDecision

    def to_wire(self) -> dict:
        return {
            "trainer": self.trainer,
            "seq": self.seq,
            "decision": _plain(AgentDecision, self.decision),
        }

    @classmethod
    def from_wire(cls, d: dict) -> DecisionReply:
        _only(d, ("trainer", "seq", "decision"), "decision")
        trainer, seq = _req(d, "trainer", "int", "decision"), _req(d, "seq", "int", "decision")
        if "decision" not in d:
            raise ProtocolError("bad_field", "decision misses required fields ['decision']")
        return cls(
            trainer=trainer, seq=seq, decision=_build(AgentDecision, d["decision"], "decision")
        )


@dataclass(kw_only=True, frozen=True, slots=True)
class Ping:
    """Liveness probe (trainer or tool -> agent); answered at once with a pong."""

    KIND: ClassVar[str] = "ping"
    seq: int
    trainer: int | None = None  # None from tools (launcher, `rudder agent stats`)

    def to_wire(self) -> dict:
        return {"seq": self.seq, "trainer": self.trainer}

    @classmethod
    def from_wire(cls, d: dict) -> Ping:
        _only(d, ("seq", "trainer"), "ping")
        return cls(seq=_req(d, "seq", "int", "ping"), trainer=_opt(d, "trainer", "int?", "ping"))


@dataclass(kw_only=True, frozen=True, slots=True)
class Pong:
    """agent -> pinger: alive; ``registered`` says whether the agent knows this trainer."""

    KIND: ClassVar[str] = "pong"
    seq: int
    trainer: int | None = None
    registered: bool = False  # False after an agent restart: the trainer must say hello again

    def to_wire(self) -> dict:
        return {"seq": self.seq, "trainer": self.trainer, "registered": self.registered}

    @classmethod
    def from_wire(cls, d: dict) -> Pong:
        _only(d, ("seq", "trainer", "registered"), "pong")
        return cls(
            seq=_req(d, "seq", "int", "pong"),
            trainer=_opt(d, "trainer", "int?", "pong"),
            registered=_opt(d, "registered", "bool", "pong", False),
        )


@dataclass(kw_only=True, frozen=True, slots=True)
class StatsRequest:
    """tool -> agent: send your live statistics."""

    KIND: ClassVar[str] = "stats"
    seq: int

    def to_wire(self) -> dict:
        return {"seq": self.seq}

    @classmethod
    def from_wire(cls, d: dict) -> StatsRequest:
        _only(d, ("seq",), "stats")
        return cls(seq=_req(d, "seq", "int", "stats"))


@dataclass(kw_only=True, frozen=True, slots=True)
class StatsReply:
    """agent -> tool: the server's counters and per-trainer statistics (plain values)."""

    KIND: ClassVar[str] = "stats_reply"
    seq: int
    server: dict[str, Any]
    trainers: dict[int, dict[str, Any]]

    def to_wire(self) -> dict:
        # msgpack map keys are strings here (strict_map_key): trainer ids travel as text.
        return {
            "seq": self.seq,
            "server": self.server,
            "trainers": {str(k): v for k, v in self.trainers.items()},
        }

    @classmethod
    def from_wire(cls, d: dict) -> StatsReply:
        _only(d, ("seq", "server", "trainers"), "stats_reply")
        server, trainers = d.get("server", {}), d.get("trainers", {})
        if not isinstance(server, dict) or not isinstance(trainers, dict):
            raise ProtocolError("bad_field", "stats_reply.server and .trainers must be maps")
        out: dict[int, dict[str, Any]] = {}
        for k, v in trainers.items():
            if not (isinstance(k, str) and k.lstrip("-").isdigit()) or not isinstance(v, dict):
                raise ProtocolError("bad_field", f"stats_reply.trainers[{k!r}] must map id -> map")
            out[int(k)] = v
        return cls(seq=_req(d, "seq", "int", "stats_reply"), server=server, trainers=out)


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

    def to_wire(self) -> dict:
        return {
            "reason": self.reason,
            "detail": self.detail,
            "seq": self.seq,
            "trainer": self.trainer,
        }

    @classmethod
    def from_wire(cls, d: dict) -> ErrorReply:
        _only(d, ("reason", "detail", "seq", "trainer"), "error")
        try:
            return cls(
                reason=_req(d, "reason", "str", "error"),
                detail=_opt(d, "detail", "str", "error", ""),
                seq=_opt(d, "seq", "int?", "error"),
                trainer=_opt(d, "trainer", "int?", "error"),
            )
        except ValueError as e:
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError("bad_field", f"error: {e}") from None


@dataclass(kw_only=True, frozen=True, slots=True)
class Bye:
    """trainer -> agent: done; forget me (the agent keeps its history)."""

    KIND: ClassVar[str] = "bye"
    trainer: int
    reason: str = ""

    def to_wire(self) -> dict:
        return {"trainer": self.trainer, "reason": self.reason}

    @classmethod
    def from_wire(cls, d: dict) -> Bye:
        _only(d, ("trainer", "reason"), "bye")
        return cls(
            trainer=_req(d, "trainer", "int", "bye"), reason=_opt(d, "reason", "str", "bye", "")
        )


Message: TypeAlias = (
    Hello
    | MetricsReport
    | DecisionReply
    | Ping
    | Pong
    | StatsRequest
    | StatsReply
    | ErrorReply
    | Bye
)
KINDS: dict[str, type] = {
    cls.KIND: cls
    for cls in (
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
}


def _only(d: dict, names: tuple[str, ...], kind: str) -> None:
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ProtocolError("bad_field", f"{kind} has unknown fields {sorted(map(str, unknown))}")


def _req(d: dict, name: str, base: str, kind: str) -> Any:
    if name not in d:
        raise ProtocolError("bad_field", f"{kind} misses required field {name!r}")
    return _opt(d, name, base, kind)


def _opt(d: dict, name: str, base: str, kind: str, default: object = None) -> Any:
    if name not in d:
        return default
    value = d[name]
    if type(value) is _EXACT.get(base):  # the common case, nothing to build
        return value
    return _check(kind, name, base.rstrip("?"), base.endswith("?"), value)


def encode(msg: Message) -> bytes:
    """The wire bytes of ``msg`` (raises ProtocolError if they would exceed the size limit)."""
    body = msg.to_wire()
    body["v"] = PROTOCOL_VERSION
    body["kind"] = msg.KIND
    try:
        data = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError("bad_field", f"{msg.KIND}: cannot encode: {e}", kind=msg.KIND) from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "oversized",
            f"{msg.KIND} is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}",
            kind=msg.KIND,
        )
    return data


def decode(data: bytes) -> Message:
    """The message in ``data``; raises :class:`ProtocolError` saying what is wrong with it."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"{len(data)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        # raw=False: strings are UTF-8 text; strict_map_key: keys are str/bytes only; ext types
        # stay inert ExtType values (rejected below). No object hooks: nothing runs on decode.
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ProtocolError("malformed", f"not a msgpack message ({why})") from None
    if not isinstance(body, dict):
        raise ProtocolError("not_a_map", f"a message is a msgpack map, got {type(body).__name__}")
    kind = body.pop("kind", None)
    seq = body.get("seq") if type(body.get("seq")) is int else None
    trainer = body.get("trainer") if type(body.get("trainer")) is int else None
    where = {"kind": kind if isinstance(kind, str) else None, "seq": seq, "trainer": trainer}
    version = body.pop("v", None)
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        said = "no version field 'v'" if version is None else f"version {version!r:.20}"
        raise ProtocolError(
            "unsupported_version",
            f"message has {said}; this side speaks protocol version(s) "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            **where,
        )
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(
            "unknown_kind", f"kind {kind!r:.40} is not one of {sorted(KINDS)}", **where
        )
    try:
        return cls.from_wire(body)
    except ProtocolError as e:
        raise ProtocolError(e.reason, e.detail, **where) from None


# -- endpoints ---------------------------------------------------------------------------------

IPC_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with the terminating NUL)
_LOOPBACK_NAMES = ("localhost",)


def endpoint_scheme(endpoint: str) -> str:
    """``ipc`` or ``tcp``; ValueError for anything else."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp") or not rest:
        raise ValueError(
            f"endpoint {endpoint!r}: expected ipc:///path/to/agent.sock or tcp://127.0.0.1:PORT"
        )
    return scheme


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint (None for tcp)."""
    return Path(endpoint[len("ipc://") :]) if endpoint_scheme(endpoint) == "ipc" else None


def check_endpoint(endpoint: str, *, allow_remote: bool = False) -> str:
    """Validate an endpoint to bind or connect; returns it unchanged.

    ``ipc://PATH`` with PATH at most 107 bytes, or ``tcp://HOST:PORT``. HOST must be a
    loopback address unless ``allow_remote``: the protocol has no authentication, so an agent
    listening on a network interface would take decisions (and stats requests) from anyone.
    """
    if endpoint_scheme(endpoint) == "ipc":
        path = endpoint[len("ipc://") :]
        if len(path.encode()) > IPC_PATH_MAX:
            raise ValueError(
                f"endpoint {endpoint!r}: unix socket paths are limited to {IPC_PATH_MAX} bytes, "
                f"this one has {len(path.encode())}; use a shorter directory (see ipc_endpoint)"
            )
        return endpoint
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT with a port 1..65535")
    host = host.strip("[]")
    if not allow_remote and not _is_loopback(host):
        raise ValueError(
            f"endpoint {endpoint!r} is not on loopback: the agent protocol has no "
            "authentication; use tcp://127.0.0.1:PORT or ipc://, or allow remote explicitly "
            "(--allow-remote)"
        )
    return endpoint


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: not provably loopback


def ipc_endpoint(directory: str | Path | None = None, name: str = "agent") -> str:
    """An ``ipc://`` endpoint for ``name``: ``DIRECTORY/NAME.sock`` if that path is short enough.

    Otherwise (or without a directory) a per-user path under ``$XDG_RUNTIME_DIR`` or the temp
    directory, named after a hash of the directory so runs do not collide. Never /dev/shm:
    emulated machines mount a private /dev/shm, so a socket there is invisible to the others.
    """
    if directory is not None:
        path = Path(directory).resolve() / f"{name}.sock"
        if len(str(path).encode()) <= IPC_PATH_MAX:
            return f"ipc://{path}"
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:8] if directory is not None else ""
    fname = f"rudder-{os.getuid()}{'-' + tag if tag else ''}-{name}.sock"
    path = base / fname
    if len(str(path).encode()) > IPC_PATH_MAX:
        path = Path("/tmp") / fname
    return check_endpoint(f"ipc://{path}")
