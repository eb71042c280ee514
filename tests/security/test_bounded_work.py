"""Bounded work per message and bounded state per trainer, in-process (the sidecar's parts).

The codec refuses hostile structures with a typed error and quotes nothing unbounded; the log
limiter caps lines per kind of event; a stats reply fits one message; checkpoints keep only
the latest state per trainer, and a released trainer leaves only its statistics.
"""

import logging
import sqlite3
import time

import msgpack
import pytest

from rudder.controller.checkpoints import PrunedMemorySaver, PrunedSqliteSaver
from rudder.controller.decision_models import RuleModel
from rudder.controller.graph import GraphAgent, build_graph
from rudder.controller.log_limit import LogLimiter
from rudder.controller.nodes import AgentContext
from rudder.controller.stats import fit
from rudder.protocol import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Metrics,
    ProtocolError,
    brief,
    decode,
)
from rudder.rules import make_decider
from tests.agent_support import metrics as make_metrics

V = PROTOCOL_VERSION


def nested(depth: int, leaf=None):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_bytes(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def reject(data: bytes) -> ProtocolError:
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert time.perf_counter() - t0 < 0.5  # bounded work, whatever the input
    return info.value


@pytest.mark.parametrize(
    "body",
    [
        {"v": "DEEP", "kind": "ping", "seq": 1},
        {"v": V, "kind": "DEEP", "seq": 1},
        {"v": V, "kind": "hello", "trainer": "DEEP"},
        {"v": V, "kind": "ping", "seq": "DEEP"},
        {"v": V, "kind": "stats_reply", "seq": 1, "server": {"x": "DEEP"}, "trainers": {}},
        {"v": V, "kind": "bye", "trainer": 0, "DEEP": 1},
    ],
)
def test_a_value_1000_deep_anywhere_is_a_protocol_error(body):
    # The probe's message: ~1 KB, 1,000 arrays deep. Spliced in raw (packb refuses the depth).
    data = msgpack.packb(body).replace(msgpack.packb("DEEP"), deep_bytes(1000))
    e = reject(data)
    assert e.reason in ("malformed", "bad_field", "unsupported_version", "unknown_kind")


def test_depth_and_value_count_limits():
    ok = {"v": V, "kind": "stats_reply", "seq": 1, "server": {"x": nested(MAX_DEPTH - 2)}}
    ok["trainers"] = {}
    assert decode(msgpack.packb(ok)).server["x"] == nested(MAX_DEPTH - 2)
    too_deep = {**ok, "server": {"x": nested(MAX_DEPTH - 1)}}
    assert "deeper than" in reject(msgpack.packb(too_deep)).detail
    wide = {"v": V, "kind": "ping", "seq": 1, "x": [None] * 10_000}
    e = reject(msgpack.packb(wide))
    assert e.reason == "malformed" and "values" in e.detail and e.seq == 1


def test_hostile_keys_and_values_are_quoted_briefly():
    long_key = {"v": V, "kind": "stats_reply", "seq": 1, "server": {}, "trainers": {"1" * 5000: {}}}
    assert reject(msgpack.packb(long_key)).reason == "bad_field"
    forged = reject(msgpack.packb({"v": V, "kind": "x\n12:00:00 ERROR forged", "seq": 1}))
    assert "\n" not in forged.detail and "\\n" in forged.detail
    many = {"v": V, "kind": "ping", "seq": 1, **{f"k{i}" * 5: i for i in range(500)}}
    e = reject(msgpack.packb(many))
    assert len(str(e)) < 400 and "more" in e.detail
    assert len(decode_error_for_huge_string()) < 200


def decode_error_for_huge_string() -> str:
    body = {"v": V, "kind": "ping", "seq": "x" * (MAX_MESSAGE_BYTES - 100)}
    return str(reject(msgpack.packb(body)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\nb\x1b[31m", "'a\\nb\\x1b[31m'"),
        (nested(5000), "a list of 1"),
        ({"k": 1}, "a map of 1"),
        (b"\x00" * 100, None),
        (msgpack.ExtType(1, b"x" * 1000), "ExtType"),
        (2**64, str(2**64)),
    ],
)
def test_brief_is_short_printable_and_never_recurses(value, expected):
    text = brief(value)
    assert len(text) <= 43 and text.isprintable()
    if expected is not None:
        assert text == expected


def test_log_limiter_caps_lines_per_kind_and_counts_the_rest(caplog):
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("t"), burst=3, per_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        logged = [limiter.log("rejected", logging.WARNING, "bad %d", i) for i in range(1000)]
        assert sum(logged) == 3
        assert limiter.log("other", logging.WARNING, "another kind")  # its own budget
        now[0] = 2.0
        assert limiter.log("rejected", logging.WARNING, "bad %d", 1000)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and lines[-1] == "bad 1000 (and 997 more like it not logged)"


def test_stats_fit_a_message_whatever_the_entries():
    fat = {"x" * 20: list(range(200)), "reason": "y" * 3000}
    listed = fit(range(1000), lambda t: {"trainer": t, **fat})
    assert 0 < len(listed) < 1000 and list(listed) == list(range(len(listed)))
    assert len(msgpack.packb({str(k): v for k, v in listed.items()})) < MAX_MESSAGE_BYTES
    huge = fit([1, 2], lambda t: {"blob": "z" * 60_000})
    assert huge == {1: {"omitted": "too large"}, 2: {"omitted": "too large"}}
    assert len(fit(range(10_000), lambda t: {})) == 64  # bounded work per request


# -- bounded state ---------------------------------------------------------------------------


def metrics(t: int, trainer: int = 0) -> Metrics:
    return make_metrics(
        t, trainer, total_minibatches=10**6, window=8, hit_pct=40.0 + t % 7,
        hit_pct_window=41.0, rows_fetched=50, rows_fetched_window=50,
    )  # fmt: skip


@pytest.fixture(params=["memory", "sqlite"])
def saver(request, tmp_path):
    if request.param == "memory":
        yield PrunedMemorySaver()
        return
    conn = sqlite3.connect(str(tmp_path / "c.sqlite"), check_same_thread=False)
    yield PrunedSqliteSaver(conn)
    conn.close()


def test_pruned_savers_keep_the_latest_checkpoint_per_thread(saver):
    graph = build_graph().compile(checkpointer=saver)
    ctx = AgentContext(model=RuleModel(make_decider("every:3")))
    configs = [{"configurable": {"thread_id": f"r:trainer-{t}"}} for t in range(2)]
    held = []
    for t in range(30):
        for cfg in configs:
            graph.invoke({"trainer": 0, "incoming": metrics(t).to_dict()}, cfg, context=ctx)
            saver.prune([cfg["configurable"]["thread_id"]])
        if isinstance(saver, PrunedMemorySaver) and t in (9, 29):
            held.append((len(saver.blobs), len(saver.writes)))
    for cfg in configs:
        assert len(list(saver.list(cfg))) == 1
        state = graph.get_state(cfg).values  # the latest is whole: history and counts
        assert state["counts"]["decisions"] == 30 and len(state["recent"]) == 16
    if held:  # no blob or write of a dropped checkpoint stays behind
        assert held[0] == held[1], held
    saver.prune([configs[0]["configurable"]["thread_id"]], strategy="delete")
    assert not list(saver.list(configs[0])) and len(list(saver.list(configs[1]))) == 1
    with pytest.raises(ValueError, match="keep_latest"):
        saver.prune([], strategy="oldest")


def file_size_after(path, engine: str, minibatches: range) -> int:
    """Run 2 trainers over ``minibatches`` on the checkpoint ``path``; its size at rest."""
    agent = GraphAgent(
        lambda: RuleModel(make_decider("heuristic")),
        checkpoint=path,
        engine=engine,
        save_interval_s=0.0,  # every decision writes
    )
    for t in minibatches:
        for trainer in range(2):
            agent.decide(trainer, metrics(t, trainer))
    agent.close()
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log folded in: the file's own size
    conn.close()
    return path.stat().st_size


@pytest.mark.parametrize("engine", ["langgraph", "direct"])
def test_the_checkpoint_file_stays_the_same_size(tmp_path, engine):
    path = tmp_path / "agent.sqlite"
    first = file_size_after(path, engine, range(40))
    then = file_size_after(path, engine, range(40, 240))  # 5x the decisions, resumed
    assert then <= first * 1.5 + 65536, (first, then)  # probe: 78 MB after 3,786 decisions
    conn = sqlite3.connect(str(path))
    table = "checkpoints" if engine == "langgraph" else "rudder_agent_state"
    rows = conn.execute(f"SELECT thread_id, COUNT(*) FROM {table} GROUP BY thread_id").fetchall()
    conn.close()
    assert sorted(rows) == [("run:trainer-0", 1), ("run:trainer-1", 1)]


@pytest.mark.parametrize("engine", ["langgraph", "direct"])
def test_a_released_trainer_leaves_only_its_statistics(engine):
    agent = GraphAgent(lambda: RuleModel(make_decider("always")), engine=engine, keep_departed=3)
    for trainer in range(6):
        agent.hello(trainer, {"run_id": "r"})
        for t in range(5):
            agent.decide(trainer, metrics(t, trainer))
        agent.release(trainer)
    assert agent.trainers() == [3, 4, 5]  # the 3 most recent leavers are remembered
    assert agent.stats()[5]["decisions"] == 5
    assert not agent.state(5).get("counts")  # no checkpoint file: the state itself is gone
    d = agent.decide(5, metrics(9, 5))  # back: a fresh history
    assert d.valid and agent.stats([5])[5]["decisions"] == 1


def test_a_released_trainer_resumes_from_the_file(tmp_path):
    agent = GraphAgent(
        lambda: RuleModel(make_decider("always")),
        checkpoint=tmp_path / "a.sqlite",
        engine="direct",
        save_interval_s=3600.0,  # only release and close save
    )
    for t in range(4):
        agent.decide(1, metrics(t, 1))
    agent.release(1)
    agent.decide(1, metrics(4, 1))
    assert agent.stats([1])[1]["decisions"] == 5
    agent.close()
