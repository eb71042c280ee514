"""The trainer-side client against a real AgentServer (in a thread) over ipc sockets."""

import contextlib
import logging
import re
import threading
import time
from functools import partial
from types import SimpleNamespace

import pytest

from rudder.controller.server import AgentServer, ServerConfig
from rudder.decisions import Decision
from rudder.protocol import StatsReply, StatsRequest, TrainerInfo
from rudder.trainer_hooks import agent_client
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig, ask
from tests.agent_support import metrics as make_metrics
from tests.agent_support import wait_until
from tests.fakes import FailingAgent, InstantAgent, SlowAgent

FAST = dict(  # test-sized timeouts
    ping_interval_s=0.05,
    ping_timeout_s=0.3,
    backoff_initial_s=0.02,
    backoff_max_s=0.1,
    hello_timeout_s=1.0,
)


metrics = partial(
    make_metrics,
    total_minibatches=1000, remote_inputs=100, local_inputs=300, hits=50, misses=50,
    rows_fetched=50, bytes_fetched=200, hit_pct=50.0, hit_pct_window=50.0,
    hit_pct_cumulative=40.0, rows_fetched_window=50.0, since_replacement=-1,
    buffer_capacity=100, buffer_fill=100, stale_slots=20,
)  # fmt: skip


@pytest.fixture
def endpoint(tmp_path):
    ep = f"ipc://{tmp_path}/agent.sock"
    yield ep
    assert not (tmp_path / "agent.sock").exists(), "the server left its socket file"


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = set(threading.enumerate())
    yield
    assert wait_until(lambda: not (set(threading.enumerate()) - before), 5.0), [
        t.name for t in set(threading.enumerate()) - before
    ]


@contextlib.contextmanager
def serving(agent, endpoint, **config):
    server = AgentServer(agent, endpoint, ServerConfig(**config))
    thread = threading.Thread(target=server.run, name="test-agent-server")
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive()


@contextlib.contextmanager
def client(endpoint, **overrides):
    c = AgentClient(
        ClientConfig(endpoint=endpoint, trainer=0, run_id="r1", **{**FAST, **overrides})
    )
    try:
        c.hello(TrainerInfo(graph="g", buffer_capacity=100))
        yield c
    finally:
        c.close()


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def test_instant_agent_answers_every_minibatch(endpoint):
    agent = InstantAgent("replace")
    with serving(agent, endpoint), client(endpoint) as c:
        for t in range(40):
            c.decision_for(t)
            c.offer(metrics(t))
            time.sleep(0.003)  # the rest of the minibatch
        assert c.requests >= 30
        assert len(c.applied) >= 30 and all(d is Decision.REPLACE for _, d in c.applied)
        assert c.replacement_interval() <= 1.5
        assert agent.hellos and agent.hellos[0][1]["graph"] == "g"
        assert agent.hellos[0][1]["run_id"] == "r1"


def test_async_drops_stale_metrics_and_applies_on_arrival(endpoint):
    agent = SlowAgent(delay_s=0.3, decision="replace")
    with serving(agent, endpoint), client(endpoint) as c:
        assert c.decision_for(0) is Decision.SKIP  # nothing asked yet
        c.offer(metrics(0))
        assert c.requests == 1
        for t in range(1, 6):  # the agent is still thinking: skip, and drop what we offer
            d, took = timed(c.decision_for, t)
            assert d is Decision.SKIP and took < 0.05
            _, took = timed(c.offer, metrics(t))
            assert took < 0.05
            time.sleep(0.01)
        assert c.dropped == 5 and c.requests == 1
        assert wait_until(lambda: agent.seen == [(0, 0)])
        time.sleep(0.15)  # the answer reaches our socket; nobody calls meanwhile
        assert c.decision_for(6) is Decision.REPLACE  # lands at the first call after arrival
        assert c.applied == [(6, Decision.REPLACE)]
        assert c.last_decision.minibatch == 0 and c.last_decision.latency_s >= 0.3
        c.offer(metrics(6))  # the freshest metrics, not those of minibatches 1..5
        assert c.requests == 2
        assert wait_until(lambda: agent.seen == [(0, 0), (0, 6)])


def run_async(c: AgentClient, minibatches: int, step_s: float) -> float:
    worst = 0.0
    for t in range(minibatches):
        t0 = time.perf_counter()
        c.decision_for(t)
        c.offer(metrics(t))
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(step_s)
    return worst


def test_interval_grows_with_the_agents_delay(endpoint):
    intervals = {}
    for delay in (0.0, 0.1):
        with serving(SlowAgent(delay_s=delay), endpoint), client(endpoint) as c:
            worst = run_async(c, 50, step_s=0.01)
            assert worst < 0.05  # async never waits for the agent
            intervals[delay] = c.replacement_interval()
            assert c.dropped > 0 if delay else True
    assert intervals[0.0] <= 2.0
    assert intervals[0.1] >= 4.0 and intervals[0.1] > 2 * intervals[0.0]


def test_sync_waits_for_every_decision(endpoint):
    agent = SlowAgent(delay_s=0.02, decision="replace")
    with serving(agent, endpoint), client(endpoint, mode="sync", sync_timeout_s=2.0) as c:
        assert c.decision_for(0) is Decision.SKIP  # nothing in flight: nothing to wait for
        for t in range(8):
            if t:
                d, took = timed(c.decision_for, t)
                assert d is Decision.REPLACE and took >= 0.015
            c.offer(metrics(t))
        assert [t for t, _ in c.applied] == list(range(1, 8))
        assert c.dropped == 0 and c.timeouts == 0 and c.replacement_interval() == 1.0
        assert [mb for _, mb in agent.seen] == list(range(7)) or len(agent.seen) >= 7


def test_an_early_decision_reaches_the_trainer_before_the_answer_is_complete(endpoint):
    """A decision-first answer: the trainer waits for the decision, not for the predictions."""
    agent = SlowAgent(delay_s=1.0, decision="replace", early_s=0.05)
    with serving(agent, endpoint), client(endpoint, mode="sync", sync_timeout_s=2.0) as c:
        c.offer(metrics(0))
        d, took = timed(c.decision_for, 1)
        assert d is Decision.REPLACE and took < 0.6  # the full answer takes 1 s
        assert wait_until(lambda: len(agent.seen) == 1, timeout_s=3.0)
        c.offer(metrics(1))  # the agent is still finishing minibatch 0's answer
        d, _ = timed(c.decision_for, 2)
        assert d is Decision.REPLACE  # and then answers minibatch 1 the same way
        assert [t for t, _ in c.applied] == [1, 2] and c.timeouts == 0


def test_sync_timeout_skips_and_ignores_the_late_answer(endpoint):
    agent = SlowAgent(delay_s=0.4, decision="replace")
    with serving(agent, endpoint), client(endpoint, mode="sync", sync_timeout_s=0.1) as c:
        c.offer(metrics(0))
        d, took = timed(c.decision_for, 1)
        assert d is Decision.SKIP and 0.09 <= took < 0.35
        assert c.timeouts == 1
        time.sleep(0.5)  # the answer to minibatch 0 arrives, too late
        c.offer(metrics(1))
        assert c.stale == 1 and c.requests == 2
        assert c.applied == []


def test_a_failing_agent_yields_invalid_skips_and_the_server_goes_on(endpoint):
    agent = FailingAgent()
    with (
        serving(agent, endpoint) as server,
        client(endpoint, mode="sync", sync_timeout_s=2.0) as c,
    ):
        for t in range(3):
            if t:
                assert c.decision_for(t) is Decision.SKIP
                assert c.last_decision.valid is False
                assert "RuntimeError" in c.last_decision.reason
            c.offer(metrics(t))
        assert len(c.applied) == 2 and c.timeouts == 0
        assert server.counters["failed"] >= 2


def test_a_stuck_decision_times_out_to_skip(endpoint):
    agent = SlowAgent(delay_s=30.0)
    with (
        serving(agent, endpoint, decide_timeout_s=0.2) as server,
        client(endpoint, mode="sync", sync_timeout_s=3.0) as c,
    ):
        c.offer(metrics(0))
        d, took = timed(c.decision_for, 1)
        assert d is Decision.SKIP and took < 1.0
        assert "timed out" in c.last_decision.reason and not c.last_decision.valid
        c.offer(metrics(1))  # the agent is still stuck on this trainer: answered at once
        d, took = timed(c.decision_for, 2)
        assert d is Decision.SKIP and took < 0.5 and "stuck" in c.last_decision.reason
        assert server.counters["timed_out"] == 1


def test_request_timeout_rebuilds_the_connection(endpoint):
    agent = SlowAgent(delay_s=1.0)
    with serving(agent, endpoint), client(endpoint, request_timeout_s=0.2) as c:
        c.offer(metrics(0))
        t, worst = 1, 0.0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            worst = max(worst, timed(c.decision_for, t)[1], timed(c.offer, metrics(t))[1])
            t += 1
            time.sleep(0.01)
        assert c.timeouts >= 1 and c.reconnects == c.timeouts  # alive but slow: every request
        assert worst < 0.05
        assert wait_until(lambda: (c.decision_for(t), len(agent.hellos) >= 2)[1], 2.0)


def test_without_an_agent_the_client_skips_and_gives_up_after_its_budget(tmp_path):
    ep = f"ipc://{tmp_path}/nobody.sock"
    c = AgentClient(
        ClientConfig(endpoint=ep, trainer=0, max_reconnects=2, **{**FAST, "ping_timeout_s": 0.05})
    )
    try:
        assert not c.hello(TrainerInfo())  # nobody to say it to (waits hello_timeout_s once)
        worst, t = 0.0, 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not c.offline:
            d, took = timed(c.decision_for, t)
            assert d is Decision.SKIP
            worst = max(worst, took, timed(c.offer, metrics(t))[1])
            t += 1
            time.sleep(0.005)
        assert c.offline and c.reconnects == 2
        assert worst < 0.02
        assert c.requests == 0 and c.dropped == t and c.applied == []
    finally:
        c.close()


def test_decisions_resume_when_an_agent_comes_back_on_the_same_endpoint(endpoint):
    first = serving(InstantAgent("replace"), endpoint)
    first.__enter__()
    try:
        c = AgentClient(ClientConfig(endpoint=endpoint, trainer=0, **FAST))
        assert c.hello(TrainerInfo())
        run_async(c, 10, 0.005)
        assert c.applied
    finally:
        first.__exit__(None, None, None)
    try:
        n = len(c.applied)
        worst = run_async(c, 60, 0.01)  # no agent: skip, quickly
        assert len(c.applied) == n and worst < 0.02 and c.reconnects >= 1
        second = InstantAgent("replace")
        with serving(second, endpoint):
            assert wait_until(lambda: (run_async(c, 1, 0.005), len(c.applied) > n)[1], 5.0)
            assert second.hellos and second.hellos[-1][0] == 0  # we said hello again
    finally:
        c.close()


def test_stats_and_bye(endpoint):
    with serving(InstantAgent("skip"), endpoint) as server:
        with client(endpoint) as c:
            run_async(c, 5, 0.005)
            reply = ask(endpoint, StatsRequest(seq=9), timeout_s=2.0)
            assert isinstance(reply, StatsReply) and reply.seq == 9
            assert reply.server["trainers"] == 1 and reply.trainers[0]["decisions"] >= 1
            assert reply.trainers[0]["agent"]["decisions"] >= 1
        assert wait_until(lambda: server.counters["messages"] and not _trainers(endpoint))


def _trainers(endpoint):
    """The trainers the server holds a session for (it also lists those that left)."""
    trainers = ask(endpoint, StatsRequest(seq=1), timeout_s=2.0).trainers
    return {t: s for t, s in trainers.items() if s["connected"]}


def test_a_closed_client_answers_skip(endpoint):
    with serving(InstantAgent("replace"), endpoint):
        c = AgentClient(ClientConfig(endpoint=endpoint, trainer=0, **FAST))
        c.close()
        c.close()
        assert c.decision_for(3) is Decision.SKIP
        c.offer(metrics(3))
        assert c.dropped == 1


def test_client_cost_per_minibatch_is_small(endpoint):
    with serving(InstantAgent("skip"), endpoint), client(endpoint) as c:
        n = 2000
        t0 = time.perf_counter()
        for t in range(n):
            c.decision_for(t)
            c.offer(metrics(t))
        per_minibatch = (time.perf_counter() - t0) / n
    assert per_minibatch < 300e-6  # the benchmark's target is 100 us; CI machines vary


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"mode": "eager"}, "mode must be one of"),
        ({"sync_timeout_s": 0}, "sync_timeout_s must be positive"),
        ({"endpoint": "tcp://0.0.0.0:5555"}, "not on loopback"),
        ({"backoff_max_s": 0.01, "backoff_initial_s": 1}, "backoff_max_s"),
    ],
)
def test_config_is_checked(changes, words):
    with pytest.raises(ValueError, match=words):
        ClientConfig(**{"endpoint": "ipc:///run/rudder/x.sock", "trainer": 0, **changes})


# -- the server's side of the contract (in-process server, real sockets) -----------------------


class CheckingAgent(SlowAgent):
    """A slow agent that notes any overlap of two decide calls for one trainer."""

    def __init__(self, delay_s: float):
        super().__init__(delay_s)
        self.active: dict[int, int] = {}
        self.overlaps = 0

    def decide(self, trainer, m, early=None):
        with self._lock:
            self.active[trainer] = self.active.get(trainer, 0) + 1
            self.overlaps += self.active[trainer] > 1
        try:
            return super().decide(trainer, m)
        finally:
            with self._lock:
                self.active[trainer] -= 1


def test_newer_metrics_supersede_pending_ones(endpoint):
    import zmq

    from rudder.protocol import Hello, MetricsReport, decode, encode

    agent = CheckingAgent(delay_s=0.2)
    with serving(agent, endpoint) as server:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            sock.send(encode(Hello(trainer=0)))
            assert wait_until(lambda: agent.hellos)
            sock.send(encode(MetricsReport(trainer=0, seq=0, metrics=metrics(0))))
            assert wait_until(lambda: agent.active.get(0))  # deciding on 0 ...
            for t in (1, 2, 3):  # ... so 1 and 2 are superseded by 3, which is decided next
                sock.send(encode(MetricsReport(trainer=0, seq=t, metrics=metrics(t))))
            seqs = []
            while len(seqs) < 2 and sock.poll(3000):
                seqs.append(decode(sock.recv()).seq)
        finally:
            sock.close(0)
            ctx.term()
        assert seqs == [0, 3]
        assert agent.seen == [(0, 0), (0, 3)]
        assert server.counters["superseded"] == 2


def test_one_server_serves_several_trainers_one_call_each_at_a_time(endpoint):
    agent = CheckingAgent(delay_s=0.02)
    with serving(agent, endpoint, workers=2):
        clients = [
            AgentClient(ClientConfig(endpoint=endpoint, trainer=r, mode="sync", **FAST))
            for r in range(3)
        ]
        try:
            for c in clients:
                c.hello(TrainerInfo())
            for t in range(6):
                for r, c in enumerate(clients):
                    if t:
                        assert c.decision_for(t) is Decision.REPLACE
                    c.offer(metrics(t, trainer=r))
        finally:
            for c in clients:
                c.close()
    assert agent.overlaps == 0
    assert all(len(c.applied) == 5 for c in clients)


def test_silent_trainers_expire_and_come_back_with_hello(endpoint):
    agent = InstantAgent("replace")
    with serving(agent, endpoint, expiry_s=0.2), client(endpoint) as c:
        run_async(c, 3, 0.005)
        assert _trainers(endpoint)
        assert wait_until(lambda: not _trainers(endpoint), 3.0)  # we went quiet: forgotten
        n = len(c.applied)
        assert wait_until(lambda: (run_async(c, 1, 0.01), len(c.applied) > n + 2)[1], 5.0)
        assert len(agent.hellos) >= 2 and _trainers(endpoint)


def test_hello_looks_for_a_missing_agent_ever_more_rarely(tmp_path, monkeypatch):
    # The start-up wait for the connection: 1 ms, doubling to 50 ms, until hello_timeout_s.
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        time.sleep(s)

    fake_time = SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr(agent_client, "time", fake_time)
    ep = f"ipc://{tmp_path}/nobody.sock"
    c = AgentClient(ClientConfig(endpoint=ep, trainer=0, **{**FAST, "hello_timeout_s": 0.3}))
    try:
        assert not c.hello(TrainerInfo())
    finally:
        c.close()
    assert sleeps[:7] == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05])
    assert all(s <= 0.05 for s in sleeps) and 0.25 <= sum(sleeps) <= 0.31
    assert len(sleeps) < 15  # a fixed 5 ms poll took 60 wake-ups for the same wait


def test_reconnects_back_off_exponentially_up_to_the_cap(tmp_path, caplog):
    ep = f"ipc://{tmp_path}/nobody.sock"
    config = {**FAST, "ping_timeout_s": 0.02, "backoff_initial_s": 0.01, "backoff_max_s": 0.03}
    c = AgentClient(ClientConfig(endpoint=ep, trainer=0, max_reconnects=4, **config))
    caplog.set_level(logging.WARNING, logger=agent_client.__name__)
    try:
        c.hello(TrainerInfo())
        assert wait_until(lambda: (c.decision_for(0), c.offline)[1], 5.0, 0.002)
    finally:
        c.close()
    delays = [float(m) for m in re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)]
    assert delays == [0.01, 0.02, 0.03, 0.03]  # then the budget (4) is spent: offline
