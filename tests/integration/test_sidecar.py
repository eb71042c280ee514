"""The sidecar as a real process: `rudder agent serve`, hostile peers, kills, AgentSidecars."""

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import msgpack
import psutil
import pytest

from rudder.controller.server import make_agent
from rudder.decisions import Decision
from rudder.launcher.sidecars import (
    UNRESPONSIVE,
    AgentSidecars,
    SidecarError,
    Watchdog,
    sidecar_endpoints,
)
from rudder.launcher.summary import fault_record
from rudder.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ErrorReply,
    Ping,
    Pong,
    StatsReply,
    StatsRequest,
    TrainerInfo,
    encode,
    ipc_path,
)
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig, ask
from tests.agent_support import dealer, pings, reply, start_serve, stop, wait_until
from tests.agent_support import metrics as make_metrics
from tests.fakes import RuleAgent
from tests.integration.training_support import sigint_as_at_a_terminal

pytestmark = pytest.mark.integration

RUDDER = [sys.executable, "-m", "rudder"]
FAST = dict(ping_interval_s=0.05, ping_timeout_s=0.3, backoff_initial_s=0.02, backoff_max_s=0.2)
metrics = partial(
    make_metrics,
    total_minibatches=10_000,
    buffer_capacity=100,
    stale_slots=50,
    buffer_fill=50,
    since_replacement=-1,
)


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path):
    yield
    assert wait_until(lambda: not psutil.Process().children(recursive=True), 10.0)
    assert not list(tmp_path.rglob("*.sock")), "socket files left behind"


@pytest.fixture
def sidecar(tmp_path):
    ep = f"ipc://{tmp_path}/agent.sock"
    proc = start_serve(ep, "--log", str(tmp_path / "decisions.jsonl"))
    yield ep, proc
    stop(proc)


def test_garbage_gets_an_error_reply_and_the_server_keeps_serving(sidecar):
    ep, proc = sidecar
    with dealer(ep) as sock:
        sock.send(b"\xc1 this is not msgpack")
        err = reply(sock)
        assert isinstance(err, ErrorReply) and err.reason == "malformed"
        sock.send(msgpack.packb([1, 2, 3]))
        assert reply(sock).reason == "not_a_map"
        sock.send_multipart([b"two", b"frames"])
        assert reply(sock).reason == "malformed"
        sock.send(encode(Ping(seq=5)))
        pong = reply(sock)
        assert isinstance(pong, Pong) and pong.seq == 5
    assert proc.poll() is None


def test_unknown_version_and_kind_are_rejected_with_reasons(sidecar):
    ep, _ = sidecar
    with dealer(ep) as sock:
        sock.send(msgpack.packb({"v": 99, "kind": "ping", "seq": 3}))
        err = reply(sock)
        assert err.reason == "unsupported_version" and err.seq == 3
        assert f"version(s) {PROTOCOL_VERSION}" in err.detail
        # A version-1 trainer (metrics without the grounding) hears both versions.
        sock.send(msgpack.packb({"v": 1, "kind": "ping", "seq": 6}))
        err = reply(sock)
        assert err.reason == "unsupported_version" and "version 1" in err.detail
        assert f"version(s) {PROTOCOL_VERSION}" in err.detail
        sock.send(msgpack.packb({"v": PROTOCOL_VERSION, "kind": "teleport", "seq": 4}))
        assert reply(sock).reason == "unknown_kind"
        sock.send(encode(Pong(seq=1)))  # valid protocol, but not for the agent
        assert reply(sock).reason == "unexpected_kind"
        sock.send(encode_metrics_without_hello())
        err = reply(sock)
        assert err.reason == "unknown_trainer" and err.seq == 7 and err.trainer == 3


def encode_metrics_without_hello() -> bytes:
    from rudder.protocol import MetricsReport

    return encode(MetricsReport(trainer=3, seq=7, metrics=metrics(7, trainer=3)))


def test_an_oversized_message_is_dropped_by_the_transport(sidecar):
    ep, proc = sidecar
    with dealer(ep) as sock:
        sock.send(b"\x00" * (MAX_MESSAGE_BYTES + 1024))
        assert reply(sock, timeout_s=0.5) is None  # dropped, connection reset: no reply
    assert proc.poll() is None and pings(ep)


def test_decisions_are_logged_and_stats_reported(sidecar, tmp_path):
    ep, _ = sidecar
    c = AgentClient(ClientConfig(endpoint=ep, trainer=4, mode="sync", sync_timeout_s=5, **FAST))
    try:
        assert c.hello(TrainerInfo(graph="g"))
        for t in range(4):
            if t:
                assert c.decision_for(t) is Decision.REPLACE
            c.offer(metrics(t, trainer=4))
        out = subprocess.run(
            [sys.executable, "-m", "rudder", "agent", "stats", "--connect", ep, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        stats = json.loads(out.stdout)
        assert stats["server"]["decider"] == "always" and stats["server"]["decisions"] >= 3
        assert stats["trainers"]["4"]["replace_pct"] == 100.0
        table = subprocess.run(
            [sys.executable, "-m", "rudder", "agent", "stats", "--connect", ep],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "agent always" in table and "replace_pct" in table
    finally:
        c.close()
    # a trainer that said bye still counts: runs collect the statistics after training
    deadline = time.monotonic() + 5
    while (left := ask(ep, StatsRequest(seq=9)).trainers[4])["connected"]:
        assert time.monotonic() < deadline, "the sidecar never saw the bye"
        time.sleep(0.05)
    assert left["agent"]["decisions"] >= 3 and left["agent"]["valid_pct"] == 100.0
    lines = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [r["minibatch"] for r in lines][:3] == [0, 1, 2]
    assert all(r["decision"] == "replace" and r["expected_hit_pct"] == "increase" for r in lines)


def test_sigterm_stops_gracefully_and_removes_the_socket(tmp_path):
    ep = f"ipc://{tmp_path}/agent.sock"
    proc = start_serve(ep)
    assert ipc_path(ep).exists()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert not ipc_path(ep).exists()
    assert "stopped" in out


def test_a_second_agent_on_a_live_endpoint_is_refused(sidecar):
    ep, _ = sidecar
    out = subprocess.run(
        [sys.executable, "-m", "rudder", "agent", "serve", "--bind", ep, "--decider", "never"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "in use by a running agent" in out.stderr


def test_non_loopback_tcp_is_refused_without_the_flag():
    out = subprocess.run(
        [*RUDDER, "agent", "serve", "--bind", "tcp://0.0.0.0:5999", "--decider", "never"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "not on loopback" in out.stderr


def test_unknown_decider_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "rudder", "agent", "serve", "--decider", "sometimes"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "unknown decider 'sometimes'" in out.stderr


def test_sidecar_killed_mid_run_then_restarted(tmp_path):
    ep = f"ipc://{tmp_path}/agent.sock"
    history = ("--checkpoint", str(tmp_path / "agent.sqlite"), "--run-id", "r1")
    proc = start_serve(ep, *history)
    c = AgentClient(ClientConfig(endpoint=ep, trainer=0, **FAST))
    t = 0

    def step() -> float:
        nonlocal t
        t0 = time.perf_counter()
        c.decision_for(t)
        c.offer(metrics(t))
        t += 1
        time.sleep(0.005)
        return time.perf_counter() - t0

    try:
        assert c.hello(TrainerInfo())
        assert wait_until(lambda: (step(), len(c.applied) >= 5)[1], 10.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before, worst = len(c.applied), 0.0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            worst = max(worst, step())
        assert worst < 0.03  # skip without blocking while the agent is gone
        assert len(c.applied) == before and c.reconnects >= 1
        proc = start_serve(ep, *history)  # a new sidecar on the same endpoint and checkpoint
        assert wait_until(lambda: (step(), len(c.applied) > before)[1], 10.0)
        assert all(d is Decision.REPLACE for _, d in c.applied[before:])
        # The trainer's record of it: one outage, over now, with the skips it decided alone.
        faults = c.counters()
        assert faults["outages"] == 1 and faults["outage_s"] > 1.0
        assert faults["fallback_minibatches"] > 0 and faults["unsent"] > 0
        # The trainer's history resumed from the checkpoint: the new sidecar's agent counts
        # the decisions of the one that was killed too.
        stats = ask(ep, StatsRequest(seq=7), timeout_s=5.0).trainers[0]["agent"]
        assert stats["decisions"] > len(c.applied) - before
    finally:
        c.close()
        stop(proc)


def test_agent_sidecars_start_restart_and_clean_up(tmp_path):
    endpoints = sidecar_endpoints(tmp_path / "run", 2)
    assert all(e.startswith("ipc://") and "/run/agent/" in e for e in endpoints)
    sidecars = AgentSidecars(
        endpoints, "every:4", {}, tmp_path / "logs", max_restarts=2, backoff_initial_s=0.05
    )
    with sidecars:
        assert all(pings(ep) for ep in endpoints)
        first = sidecars.pids()
        os.kill(first[1], signal.SIGKILL)  # a sidecar dies mid-run
        assert wait_until(
            lambda: sidecars.restarts == 1 and sidecars.pids()[1] not in (None, first[1])
        )
        assert wait_until(lambda: pings(endpoints[1]), 10.0)
        assert sidecars.pids()[0] == first[0]
        # The launcher's record: an outage from the kill until the successor answered.
        assert wait_until(lambda: sidecars.faults()[1]["outages"][0]["recovered"], 10.0)
        f0, f1 = sidecars.faults()
        assert f0["restarts"] == 0 and f0["outages"] == []
        assert f1["restarts"] == 1 and not f1["gave_up"] and len(f1["outages"]) == 1
        assert f1["outages"][0]["exit"] == "SIGKILL" and f1["outages"][0]["duration_s"] > 0
        reply = ask(endpoints[1], StatsRequest(seq=2))
        assert isinstance(reply, StatsReply) and reply.server["decider"] == "every:4"
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in first)
    assert not any(ipc_path(ep).exists() for ep in endpoints)
    assert "serving on" in (tmp_path / "logs" / "agent-1.log").read_text()  # appended twice


def test_a_stopped_sidecar_is_an_unresponsive_outage_until_it_answers(tmp_path):
    # Alive but silent (SIGSTOP: a hang, as the launcher sees it): not restarted, recorded.
    endpoints = sidecar_endpoints(tmp_path / "run", 2)
    watchdog = Watchdog(misses=3, interval_s=0.25, timeout_s=0.25)
    with AgentSidecars(endpoints, "never", {}, tmp_path / "logs", watchdog=watchdog) as sidecars:
        pids = sidecars.pids()
        os.kill(pids[0], signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            assert wait_until(lambda: sidecars.faults()[0]["outages"], 10.0)
            during = sidecars.faults()[0]["outages"][0]
            assert during["exit"] == UNRESPONSIVE and during["duration_s"] is None
            time.sleep(1.0)
        finally:
            os.kill(pids[0], signal.SIGCONT)
        stopped_s = time.monotonic() - stopped_at
        assert wait_until(lambda: sidecars.faults()[0]["outages"][0]["recovered"], 10.0)
        f0, f1 = sidecars.faults()
        outage = f0["outages"][0]
        # From the first unanswered ping (within one interval of the stop) to the first answer.
        assert stopped_s - 0.6 <= outage["duration_s"] <= stopped_s + 3.0, (outage, stopped_s)
        assert len(f0["outages"]) == 1 and f0["restarts"] == 0 and not f0["gave_up"]
        assert f0["down_s"] == outage["duration_s"]
        assert f1["outages"] == []  # the other one answered throughout
        assert sidecars.pids() == pids and pings(endpoints[0])  # the same process serves on
        record = fault_record(sidecars.faults(), [], 1)
        assert record["sidecar_outages"] == 1 and record["sidecar_restarts"] == 0
        assert record["sidecars"][0]["outages"][0]["exit"] == UNRESPONSIVE


def test_watchdog_settings_are_checked():
    for bad in ({"misses": -1}, {"interval_s": 0}, {"timeout_s": -1.0}):
        with pytest.raises(ValueError, match="watchdog"):
            Watchdog(**bad)


def test_agent_sidecars_report_a_sidecar_that_cannot_start(tmp_path):
    ep = f"ipc://{tmp_path}/agent.sock"
    with pytest.raises(SidecarError, match="unknown decider"):
        AgentSidecars([ep], "sometimes", {}, tmp_path / "logs").__enter__()
    with pytest.raises(ValueError, match="unknown options"):
        AgentSidecars([ep], "never", {"temperature": 1}, tmp_path / "logs")


# -- the agent factory (in-process) ------------------------------------------------------------


@pytest.mark.parametrize("spec", ["always", "never", "every:3", "heuristic"])
def test_make_agent_serves_rules_per_trainer(spec):
    from rudder.controller.graph import GraphAgent

    agent = make_agent(spec)
    assert isinstance(agent, GraphAgent)  # rules get the same history and stats as the LLM
    agent.hello(0, {"run_id": "a"})
    d = agent.decide(0, metrics(2))
    assert d.valid and d.trainer == 0 and d.minibatch == 2
    expected = ("increase", "decrease") if d.decision == "replace" else ("stagnant", "stagnant")
    assert (d.expected_hit_pct, d.expected_communication) == expected
    assert agent.stats()[0]["decisions"] == 1


def test_make_agent_rules_answer_by_minibatch():
    agent = make_agent("every:2")
    answers = [agent.decide(0, metrics(t)).decision for t in range(4)]
    assert answers == ["skip", "replace", "skip", "replace"]  # replace on minibatches 2, 4, ...
    assert agent.decide(1, metrics(0, trainer=1)).decision == "skip"


def test_make_agent_explains_bad_specs():
    with pytest.raises(ValueError, match="classifier:PATH"):
        make_agent("classifier")
    with pytest.raises(ValueError, match="llm takes no argument"):
        make_agent("llm:big")
    with pytest.raises(ValueError, match="unknown decider 'sometimes'"):
        make_agent("sometimes")


def test_make_agent_passes_options_to_build_agent(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("rudder.controller.graph")
    fake.build_agent = lambda decider, **options: (
        calls.append((decider, options)) or RuleAgent("never")
    )
    monkeypatch.setitem(sys.modules, "rudder.controller.graph", fake)
    make_agent("classifier:/m.pkl", checkpoint="/tmp/c.db")
    make_agent("llm", llm_url="http://127.0.0.1:1", llm_model="m", prompt="decision-v1")
    assert calls == [
        ("classifier:/m.pkl", {"checkpoint": "/tmp/c.db"}),
        ("llm", {"llm_url": "http://127.0.0.1:1", "llm_model": "m", "prompt": "decision-v1"}),
    ]


def test_stats_watch_refreshes_until_interrupted_then_exits_0(sidecar):
    ep, _ = sidecar
    argv = [sys.executable, "-m", "rudder", "agent", "stats", "--connect", ep, "--watch", "0.2"]
    watch = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )
    try:
        refreshes = 0  # frames that show the live agent (a busy host may time one out)
        deadline = time.monotonic() + 60
        while refreshes < 3:
            line = watch.stdout.readline()
            assert line and time.monotonic() < deadline, watch.stderr.read()
            refreshes += line.startswith("agent always on")
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
