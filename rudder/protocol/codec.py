"""The wire: ZeroMQ frames carrying msgpack maps, checked against the typed messages.

A trainer's DEALER talks to its node's sidecar ROUTER. Every message is one frame: a msgpack
map with the protocol version "v", a "kind" and that kind's fields. Nothing is ever pickled:
a peer can only make us build ints, floats, strings, bools, lists and maps, which are then
checked field by field against the dataclasses of :mod:`rudder.protocol.messages`.

One generic validator (:func:`from_wire`) and one generic converter (:func:`to_wire`) serve
every message and body: both read a dataclass's own field annotations, once per class, so a
field is declared exactly once, in its dataclass. Wire types: ``int``, ``float`` (an int is
accepted), ``str``, ``bool`` (never an int, and an int is never a bool), ``X | None``, nested
dataclasses, str enums (their value travels), ``Any``, and ``dict[str | int, ...]`` maps (int
keys travel as decimal text: msgpack map keys are strings here).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import msgpack

from rudder.protocol.messages import (
    ERROR_REASONS,
    MESSAGES,
    Bye,
    DecisionReply,
    ErrorReply,
    Hello,
    MetricsReport,
    Ping,
    Pong,
    StatsReply,
    StatsRequest,
)

__all__ = [
    "ERROR_REASONS",
    "KINDS",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_VALUES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Message",
    "ProtocolError",
    "brief",
    "decode",
    "encode",
    "from_wire",
    "to_wire",
]

PROTOCOL_VERSION = 3  # 2: metrics carry the grounding fields; 3: round outcomes (METRICS_VERSION)
SUPPORTED_VERSIONS: tuple[int, ...] = (3,)
MAX_MESSAGE_BYTES = 64 * 1024  # also the agent socket's zmq.MAXMSGSIZE: monsters never arrive
# No message nests deeper than a stats reply (message > trainers > trainer > agent > value) or
# holds more values than a 64 KiB frame of useful fields: anything beyond is refused before a
# field is looked at, so no check, error message or log line ever walks a hostile structure.
MAX_DEPTH = 8
MAX_VALUES = 8192
BRIEF_CHARS = 40  # how much of a peer's value an error message quotes

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
KINDS: dict[str, type] = {cls.KIND: cls for cls in MESSAGES}


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


# -- wire types, read once per dataclass from its annotations ----------------------------------


class _Never:
    """No wire value has this type: the fast paths below never take a field of it."""


Check = Callable[[str, Any], Any]  # (where, decoded value) -> the field's value, or ProtocolError
Plain = Callable[[Any], Any]  # a field's value -> its wire value


@dataclass(frozen=True, slots=True)
class _Type:
    desc: str  # for error messages: "int", "float or nil", "one of ['skip', 'replace']"
    exact: type  # decoded values of exactly this type are taken as they are (the fast path)
    check: Check  # every other decoded value
    out: type  # values of exactly this type are encoded as they are (the fast path)
    plain: Plain  # every other value (numpy scalars -> int/float, enums -> their value)


@dataclass(frozen=True, slots=True)
class _Spec:
    fields: dict[str, tuple[type, Check]]  # name -> (exact type, check)
    names: tuple[str, ...]  # in declaration order
    required: frozenset[str]
    wire: tuple[tuple[str, type, Plain], ...]  # (name, out type, plain)


_SPECS: dict[type, _Spec] = {}
_SCALARS = (int, float, str, bool)


def _same(value: Any) -> Any:
    return value


def brief(value: object, limit: int = BRIEF_CHARS) -> str:
    """A short, printable quote of a peer's ``value`` for error messages and logs.

    Never ``repr`` of a container (a peer's nesting would recurse) and never more than
    ``limit`` characters of text; ``repr`` of a str escapes newlines and control characters,
    so a quoted value cannot forge a log line.
    """
    if type(value) in (list, tuple):  # not isinstance: an ExtType is a (named) tuple
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a map of {len(value)}"
    if isinstance(value, str):
        text = repr(value[:limit])
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = repr(bytes(value[:limit]))
    elif value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
    else:  # an ExtType or anything else: its type only, nothing of its data
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _bad(where: str, desc: str, value: object) -> NoReturn:
    raise ProtocolError(
        "bad_field", f"{where} must be {desc}, got {type(value).__name__} {brief(value)}"
    )


def _spec(cls: type) -> _Spec:
    """The wire spec of dataclass ``cls``, built from its annotations on first use."""
    spec = _SPECS.get(cls)
    if spec is not None:
        return spec
    hints = typing.get_type_hints(cls)
    types_ = {f.name: _wire_type(hints[f.name], f"{cls.__name__}.{f.name}") for f in _fields(cls)}
    spec = _Spec(
        fields={name: (t.exact, t.check) for name, t in types_.items()},
        names=tuple(types_),
        required=frozenset(
            f.name
            for f in _fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ),
        wire=tuple((name, t.out, t.plain) for name, t in types_.items()),
    )
    _SPECS[cls] = spec
    return spec


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return dataclasses.fields(cls)


def _wire_type(tp: Any, name: str, nullable: bool = False) -> _Type:
    """How a field annotated ``tp`` is checked on decode and converted on encode."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args and not nullable:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _wire_type(rest[0], name, nullable=True)
    nil = " or nil" if nullable else ""
    if tp in _SCALARS:
        return _scalar(tp, tp.__name__ + nil, nullable)
    if tp is Any:
        return _Type("any", _Never, lambda where, v: v, _Never, _same)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp, nullable)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _nested(tp, nullable)
    if origin is dict and len(args) == 2 and args[0] in (str, int):
        return _map(args[0], _wire_type(args[1], f"{name}[]"), nullable)
    raise TypeError(f"{name}: unsupported wire type {tp!r}")


def _scalar(tp: type, desc: str, nullable: bool) -> _Type:
    def check(where: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if tp is float and type(v) is int:  # an int is a float; a bool is neither
            return float(v)
        _bad(where, desc, v)

    convert: Plain = tp if tp in (int, float) else _same  # numpy scalars -> int/float
    plain = (lambda v: None if v is None else convert(v)) if nullable else convert
    return _Type(desc, tp, check, tp, plain)


def _enum(tp: type[enum.Enum], nullable: bool) -> _Type:
    members = {m.value: m for m in tp}
    vtype = type(next(iter(members)))
    desc = f"one of {list(members)}" + (" or nil" if nullable else "")

    def check(where: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        member = members.get(v) if type(v) is vtype else None
        if member is None:
            _bad(where, desc, v)
        return member

    def plain(v: Any) -> Any:
        return v.value if type(v) is tp else None if v is None else tp(v).value

    return _Type(desc, tp, check, vtype, plain)


def _nested(tp: type, nullable: bool) -> _Type:
    _spec(tp)  # unsupported field types fail now, not at the first message

    def check(where: str, v: Any) -> Any:
        return None if v is None and nullable else from_wire(tp, v, where)

    def plain(v: Any) -> Any:
        return None if v is None else to_wire(v)

    return _Type("map" + (" or nil" if nullable else ""), tp, check, _Never, plain)


def _map(key: type, value: _Type, nullable: bool) -> _Type:
    desc = f"map of {'id' if key is int else 'text'} -> {value.desc}"
    desc += " or nil" if nullable else ""

    def check(where: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if not isinstance(v, dict):
            _bad(where, desc, v)
        out = {}
        for k, x in v.items():
            if type(k) is not str or (key is int and not _is_int_text(k)):
                raise ProtocolError("bad_field", f"{where} must be {desc}, got key {brief(k)}")
            val = x if type(x) is value.exact else value.check(f"{where}[{brief(k)}]", x)
            out[int(k) if key is int else k] = val
        return out

    def plain(v: Any) -> Any:
        if v is None:
            return None
        vout, vplain = value.out, value.plain
        return {
            (str(int(k)) if key is int else k): (x if type(x) is vout else vplain(x))
            for k, x in v.items()
        }

    return _Type(desc, _Never, check, _Never, plain)


def _is_int_text(k: str) -> bool:
    """``k`` is an int written the way ``str(int)`` writes it (nothing else round-trips)."""
    digits = k[1:] if k[:1] == "-" else k
    # Length first: int() of thousands of digits is slow, and refused past 4300 (ValueError).
    return len(digits) <= 20 and digits.isascii() and digits.isdigit() and str(int(k)) == k


# -- the two generic converters ----------------------------------------------------------------


def from_wire(cls: type, data: object, where: str | None = None) -> Any:
    """An instance of dataclass ``cls`` from the decoded map ``data``, every field checked.

    Unknown fields, missing required fields, wrong types and values the dataclass rejects
    are ProtocolError("bad_field"); ``where`` names the map in messages (default: the kind).
    """
    if where is None:
        where = getattr(cls, "KIND", cls.__name__)
    if not isinstance(data, dict):
        raise ProtocolError("bad_field", f"{where} must be a map, got {type(data).__name__}")
    spec = _SPECS.get(cls) or _spec(cls)
    fields = spec.fields
    if not data.keys() <= fields.keys():
        unknown = sorted(str(k)[:24] for k in data if k not in fields)  # keys: str or bytes
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ProtocolError("bad_field", f"{where} has unknown fields {unknown[:5]}{more}")
    if not spec.required <= data.keys():
        missing = [n for n in spec.names if n in spec.required and n not in data]
        raise ProtocolError("bad_field", f"{where} misses required fields {missing}")
    kwargs = {}
    for k, v in data.items():
        exact, check = fields[k]
        # msgpack builds exact builtin types, so `type(...) is` is the test (bool is no int).
        kwargs[k] = v if type(v) is exact else check(f"{where}.{k}", v)
    try:
        return cls(**kwargs)
    except ValueError as e:  # the dataclass's own checks (a mode, a reason, seq vs minibatch)
        raise ProtocolError("bad_field", f"{where}: {e}") from None


def to_wire(obj: Any) -> dict[str, Any]:
    """The fields of dataclass instance ``obj`` as plain wire values (a fresh dict)."""
    spec = _SPECS.get(type(obj)) or _spec(type(obj))
    out = {}
    for name, exact, plain in spec.wire:
        v = getattr(obj, name)
        out[name] = v if type(v) is exact else plain(v)
    return out


for _cls in MESSAGES:  # every message's spec now: a bad annotation fails at import
    _spec(_cls)


# -- frames ------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The wire bytes of ``msg`` (raises ProtocolError if they would exceed the size limit)."""
    kind = msg.KIND
    try:
        body = to_wire(msg)
        body["v"] = PROTOCOL_VERSION
        body["kind"] = kind
        data = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError("bad_field", f"{kind}: cannot encode: {e}", kind=kind) from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "oversized", f"{kind} is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}", kind=kind
        )
    return data


def decode(data: bytes) -> Message:
    """The message in ``data``; raises :class:`ProtocolError` saying what is wrong with it.

    Bounded work whatever ``data`` holds: at most MAX_MESSAGE_BYTES are parsed, a structure
    deeper than MAX_DEPTH or with more than MAX_VALUES values is refused before any field is
    read, and nothing but ProtocolError leaves (a bug in a check is reported as bad_field).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"{len(data)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        # raw=False: strings are UTF-8 text; strict_map_key: keys are str/bytes only; ext types
        # stay inert ExtType values (rejected by the field checks). No object hooks: nothing
        # runs on decode.
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ProtocolError("malformed", f"not a msgpack message ({why[:200]})") from None
    if not isinstance(body, dict):
        raise ProtocolError("not_a_map", f"a message is a msgpack map, got {type(body).__name__}")
    kind = body.pop("kind", None)
    seq = body.get("seq") if type(body.get("seq")) is int else None
    trainer = body.get("trainer") if type(body.get("trainer")) is int else None
    where = {"kind": kind if type(kind) is str and len(kind) <= 40 else None}
    where.update(seq=seq, trainer=trainer)
    _check_shape(body, where)
    version = body.pop("v", None)
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        said = "no version field 'v'" if version is None else f"version {brief(version, 20)}"
        raise ProtocolError(
            "unsupported_version",
            f"message has {said}; this side speaks protocol version(s) "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            **where,
        )
    cls = KINDS.get(kind) if type(kind) is str else None
    if cls is None:
        raise ProtocolError(
            "unknown_kind", f"kind {brief(kind)} is not one of {sorted(KINDS)}", **where
        )
    try:
        return from_wire(cls, body, kind)
    except ProtocolError as e:
        raise ProtocolError(e.reason, e.detail, **where) from None
    except Exception as e:  # a check that failed itself: still this message's fault, typed
        why = f"{kind}: a field could not be checked ({type(e).__name__})"
        raise ProtocolError("bad_field", why, **where) from None


def _check_shape(body: dict, where: dict) -> None:
    """Refuse ``body`` if it nests deeper than MAX_DEPTH or holds more than MAX_VALUES values.

    Iterative, so a hostile depth costs a loop, never the stack; a valid message is walked in
    a few microseconds (a metrics report: two maps, ~45 values).
    """
    count = 0
    stack: list[tuple[dict | list, int]] = [(body, 1)]
    while stack:
        container, depth = stack.pop()
        count += len(container)
        if count > MAX_VALUES:
            raise ProtocolError("malformed", f"more than {MAX_VALUES} values", **where)
        for v in container.values() if type(container) is dict else container:
            if type(v) is dict or type(v) is list:
                if depth >= MAX_DEPTH:
                    why = f"nested deeper than {MAX_DEPTH} levels"
                    raise ProtocolError("malformed", why, **where)
                stack.append((v, depth + 1))
