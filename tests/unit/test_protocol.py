"""The wire protocol: every kind round-trips; every kind of bad input is a clear ProtocolError."""

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudder.protocol import (
    DECISIONS,
    DIRECTIONS,
    ERROR_REASONS,
    IPC_PATH_MAX,
    KINDS,
    MAX_MESSAGE_BYTES,
    METRICS_VERSION,
    PROTOCOL_VERSION,
    AgentDecision,
    Bye,
    DecisionReply,
    ErrorReply,
    Hello,
    Metrics,
    MetricsReport,
    Ping,
    Pong,
    ProtocolError,
    StatsReply,
    StatsRequest,
    TrainerInfo,
    check_endpoint,
    decode,
    encode,
    ipc_endpoint,
    ipc_path,
)

ROOT = Path(__file__).resolve().parents[2]

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small = st.integers(min_value=-1, max_value=2**40)
floats = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=40)


def metrics_strategy(trainer=small, minibatch=small) -> st.SearchStrategy[Metrics]:
    kinds = {f.name: f.type for f in dataclasses.fields(Metrics)}
    fields = {name: (floats if kind == "float" else small) for name, kind in kinds.items()}
    fields.update(trainer=trainer, minibatch=minibatch)
    return st.builds(Metrics, **fields)


@st.composite
def metrics_reports(draw):
    trainer, seq = draw(small), draw(small)
    return MetricsReport(
        trainer=trainer, seq=seq, metrics=draw(metrics_strategy(st.just(trainer), st.just(seq)))
    )


@st.composite
def decision_replies(draw):
    trainer, seq = draw(small), draw(small)
    direction = st.none() | st.sampled_from(DIRECTIONS)
    decision = AgentDecision(
        trainer=trainer,
        minibatch=seq,
        decision=draw(st.sampled_from(DECISIONS)),
        valid=draw(st.booleans()),
        reason=draw(text),
        expected_hit_pct=draw(direction),
        expected_communication=draw(direction),
        latency_s=draw(floats),
    )
    return DecisionReply(trainer=trainer, seq=seq, decision=decision)


plain = st.none() | st.booleans() | small | floats | text
messages = st.one_of(
    st.builds(
        Hello,
        trainer=small,
        run_id=text,
        mode=st.sampled_from(("async", "sync")),
        info=st.builds(TrainerInfo, graph=text, num_nodes=small, buffer_capacity=small),
    ),
    metrics_reports(),
    decision_replies(),
    st.builds(Ping, seq=ints, trainer=st.none() | small),
    st.builds(Pong, seq=ints, trainer=st.none() | small, registered=st.booleans()),
    st.builds(StatsRequest, seq=ints),
    st.builds(
        StatsReply,
        seq=ints,
        server=st.dictionaries(text, plain, max_size=5),
        trainers=st.dictionaries(small, st.dictionaries(text, plain, max_size=5), max_size=4),
    ),
    st.builds(
        ErrorReply,
        reason=st.sampled_from(ERROR_REASONS),
        detail=text,
        seq=st.none() | ints,
        trainer=st.none() | small,
    ),
    st.builds(Bye, trainer=small, reason=text),
)


@given(messages)
def test_every_kind_round_trips(msg):
    data = encode(msg)
    assert isinstance(data, bytes) and len(data) <= MAX_MESSAGE_BYTES
    assert decode(data) == msg
    body = msgpack.unpackb(data)
    assert body["v"] == PROTOCOL_VERSION and body["kind"] == msg.KIND


def test_kinds_cover_the_protocol():
    assert set(KINDS) >= {"hello", "metrics", "decision", "ping", "pong", "stats", "error", "bye"}


def test_metrics_numpy_scalars_travel_as_plain_numbers():
    np = pytest.importorskip("numpy")
    m = metrics(hits=np.int64(3), hit_pct=np.float32(50.0))
    back = decode(encode(MetricsReport(trainer=0, seq=10, metrics=m))).metrics
    assert back.hits == 3 and type(back.hits) is int and type(back.hit_pct) is float


def metrics(**kw) -> Metrics:
    base = {f.name: 0 for f in dataclasses.fields(Metrics)}
    base.update(trainer=0, minibatch=10, hit_pct=50.0)
    base.update(kw)
    return Metrics(**base)


def wire(**body) -> bytes:
    return msgpack.packb(body)


def good_metrics_body(**changes) -> dict:
    body = {
        "v": PROTOCOL_VERSION,
        "kind": "metrics",
        "trainer": 0,
        "seq": 10,
        "metrics": metrics().to_dict(),
    }
    body.update(changes)
    return body


def reject(data: bytes, reason: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.reason == reason, str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize(
    "data", [b"\xc1", b"", b"\x92\x01", wire(v=PROTOCOL_VERSION, kind="ping", seq=1) + b"x"]
)
def test_not_msgpack_is_malformed(data):
    assert "not a msgpack message" in str(reject(data, "malformed"))


@pytest.mark.parametrize("body", [[1, 2], "hello", 3, None])
def test_not_a_map(body):
    assert "map" in str(reject(msgpack.packb(body), "not_a_map"))


def test_non_string_keys_are_malformed():
    reject(msgpack.packb({1: 2}), "malformed")


@pytest.mark.parametrize("version", [None, 2, 4, 0, "3", 3.0, True])
def test_unknown_or_missing_version_names_the_supported_ones(version):
    body = {"kind": "ping", "seq": 7}
    if version is not None:
        body["v"] = version
    e = reject(msgpack.packb(body), "unsupported_version")
    assert f"version(s) {PROTOCOL_VERSION}" in str(e)
    assert e.kind == "ping" and e.seq == 7  # enough to address the error reply


@pytest.mark.parametrize("old", [1, 2])
def test_an_older_peer_is_told_both_versions(old):
    """Older metrics lack grounding fields: the error names what each side speaks."""
    e = reject(msgpack.packb({"v": old, "kind": "ping", "seq": 7}), "unsupported_version")
    assert f"version {old}" in str(e) and f"version(s) {PROTOCOL_VERSION}" in str(e)
    assert PROTOCOL_VERSION == METRICS_VERSION == 3


V3_ONLY = {"round_rows_window", "round_admit_hits", "round_ghost_misses"}
V2_ONLY = {"window", "hit_pct_prev_window", "repeat_miss_pct"} | {
    f.name for f in dataclasses.fields(Metrics) if f.name.startswith("round_")
}


@pytest.mark.parametrize(("old", "missing"), [(1, V2_ONLY), (2, V3_ONLY)])
def test_an_older_metrics_record_is_refused_with_both_versions(old, missing):
    record = {k: v for k, v in metrics().to_dict().items() if k not in missing}
    with pytest.raises(ValueError, match=rf"version {old}.*needs version 3"):
        Metrics.from_dict(record)


@pytest.mark.parametrize("kind", ["pang", None, 3, "Metrics"])
def test_unknown_kind(kind):
    body = {"v": PROTOCOL_VERSION, "seq": 1}
    if kind is not None:
        body["kind"] = kind
    e = reject(msgpack.packb(body), "unknown_kind")
    assert "hello" in str(e) and "metrics" in str(e)  # lists the kinds


def with_metrics(**changes) -> dict:
    body = {**metrics().to_dict(), **changes}
    return good_metrics_body(metrics={k: v for k, v in body.items() if v is not DROP})


DROP = object()
DECISION = {"trainer": 0, "minibatch": 1, "decision": "skip", "valid": True}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (good_metrics_body(seq="10"), "metrics.seq must be int"),
        (good_metrics_body(trainer=True), "metrics.trainer must be int"),
        (good_metrics_body(extra=1), "unknown fields ['extra']"),
        ({"v": PROTOCOL_VERSION, "kind": "metrics", "trainer": 0, "seq": 10}, "'metrics'"),
        (with_metrics(hits="3"), "metrics.hits must be int"),
        (with_metrics(hit_pct=None), "hit_pct must be float"),
        (with_metrics(bogus=1), "unknown fields ['bogus']"),
        (with_metrics(hits=DROP), "['hits']"),
        (good_metrics_body(metrics=[1, 2]), "must be a map"),
        (good_metrics_body(seq=11), "sent as trainer 0 seq 11"),
        ({"v": PROTOCOL_VERSION, "kind": "ping"}, "ping misses required fields ['seq']"),
        (
            {"v": PROTOCOL_VERSION, "kind": "hello", "trainer": 0, "mode": "fast"},
            "mode must be one of",
        ),
        (
            {"v": PROTOCOL_VERSION, "kind": "hello", "trainer": 0, "info": {"num_nodes": 1.5}},
            "num_nodes must be int",
        ),
        ({"v": PROTOCOL_VERSION, "kind": "error", "reason": "because"}, "reason must be one of"),
        (
            {
                "v": PROTOCOL_VERSION,
                "kind": "decision",
                "trainer": 0,
                "seq": 1,
                "decision": {**DECISION, "decision": "yes"},
            },
            "decision must be one of",
        ),
        (
            {
                "v": PROTOCOL_VERSION,
                "kind": "decision",
                "trainer": 0,
                "seq": 1,
                "decision": {**DECISION, "valid": 1},
            },
            "decision.valid must be bool",
        ),
        (
            {
                "v": PROTOCOL_VERSION,
                "kind": "stats_reply",
                "seq": 1,
                "server": {},
                "trainers": {"x": {}},
            },
            "id -> map",
        ),
    ],
)
def test_missing_or_wrongly_typed_fields(body, words):
    e = reject(msgpack.packb(body), "bad_field")
    assert words in str(e)


def test_bad_field_keeps_what_addresses_the_reply():
    e = reject(msgpack.packb(good_metrics_body(metrics={"hits": "x"})), "bad_field")
    assert (e.kind, e.seq, e.trainer) == ("metrics", 10, 0)


def test_oversized_is_rejected_on_both_sides():
    big = msgpack.packb(
        {"v": PROTOCOL_VERSION, "kind": "bye", "trainer": 0, "reason": "x" * MAX_MESSAGE_BYTES}
    )
    assert "limit 65536" in str(reject(big, "oversized"))
    with pytest.raises(ProtocolError) as info:
        encode(Bye(trainer=0, reason="x" * MAX_MESSAGE_BYTES))
    assert info.value.reason == "oversized"


def test_unencodable_values_are_a_protocol_error():
    with pytest.raises(ProtocolError):
        encode(StatsReply(seq=1, server={"x": object()}, trainers={}))


def test_ext_types_are_inert_and_rejected():
    data = msgpack.packb(
        {"v": PROTOCOL_VERSION, "kind": "ping", "seq": msgpack.ExtType(5, b"code")}
    )
    reject(data, "bad_field")


# -- endpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["ipc:///run/rudder/a.sock", "tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:5555"],
)
def test_local_endpoints_are_accepted(endpoint):
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555"])
def test_non_loopback_tcp_needs_an_explicit_flag(endpoint):
    with pytest.raises(ValueError, match="not on loopback"):
        check_endpoint(endpoint)
    assert check_endpoint(endpoint, allow_remote=True) == endpoint


@pytest.mark.parametrize(
    "endpoint", ["udp://x:1", "/tmp/a.sock", "tcp://127.0.0.1", "tcp://h:0", "ipc://"]
)
def test_malformed_endpoints(endpoint):
    with pytest.raises(ValueError, match="expected"):
        check_endpoint(endpoint)


def test_ipc_path_limit():
    with pytest.raises(ValueError, match="limited to 107 bytes"):
        check_endpoint("ipc:///" + "a" * IPC_PATH_MAX)


def test_ipc_endpoint_short_directory_and_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the fallback's private directory
    assert ipc_endpoint(tmp_path, "m0") == f"ipc://{tmp_path.resolve()}/m0.sock"
    deep = tmp_path / ("d" * 120)
    fallback = ipc_endpoint(deep, "m0")
    assert len(str(ipc_path(fallback)).encode()) <= IPC_PATH_MAX
    assert fallback != ipc_endpoint(tmp_path / ("e" * 120), "m0")  # runs do not collide
    assert "/dev/shm" not in fallback
    assert ipc_path("tcp://127.0.0.1:1") is None


# -- hygiene -----------------------------------------------------------------------------------

WIRE_MODULES = [
    "rudder/protocol/__init__.py",
    "rudder/protocol/messages.py",
    "rudder/protocol/codec.py",
    "rudder/protocol/endpoints.py",
    "trainer_hooks/agent_client.py",
    "controller/server.py",
    "controller/dispatch.py",
    "controller/workers.py",
    "controller/router_socket.py",
    "tests/fakes.py",
    "rudder/cli/agent_cmd.py",
    "launcher/sidecars.py",
]


@pytest.mark.parametrize("path", WIRE_MODULES)
def test_no_pickle_anywhere_on_the_wire(path):
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in ("pickle", "cloudpickle", "dill", "marshal"), path
            assert name not in ("send_pyobj", "recv_pyobj", "send_serialized", "recv_serialized"), (
                path
            )


def test_agent_side_imports_nothing_heavy():
    code = (
        "import sys\n"
        "import rudder.protocol, rudder.controller.server\n"
        "import rudder.trainer_hooks.agent_client, rudder.launcher.sidecars\n"
        "print(sorted(m for m in ('torch', 'dgl', 'numba') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
