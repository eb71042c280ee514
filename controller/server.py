"""The agent sidecar: one ZeroMQ ROUTER serving every trainer of a node (docs/protocol.md).

Only the main loop touches the socket (zmq sockets are not thread-safe). ``Agent.decide`` runs
in worker threads; results come back through a queue plus a wake-up pipe that the loop polls
next to the socket, and the loop also drains that queue on every tick, so a missed wake-up
can only delay a decision, never lose it (the authors' worker could sleep forever).

Per trainer: one call into the agent at a time (hello or decide); metrics that arrive while it
decides replace the pending ones (stale-request drop, counted); when a decision is sent and
newer metrics wait, they are decided next. A failing or timed-out ``decide`` becomes a
``valid=False`` skip sent back; a malformed message gets an ``error`` reply. Nothing a peer
sends and nothing the agent does stops the loop.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from rudder.controller.agent import Agent
from rudder.decisions import DeciderSpec, Decision
from rudder.protocol import (
    MAX_MESSAGE_BYTES,
    MODES,
    AgentDecision,
    Bye,
    DecisionReply,
    ErrorReply,
    Hello,
    Message,
    Metrics,
    MetricsReport,
    Ping,
    Pong,
    ProtocolError,
    StatsReply,
    StatsRequest,
    check_endpoint,
    decode,
    encode,
    ipc_path,
)

log = logging.getLogger(__name__)

_DRAIN_BATCH = 256  # messages read per loop turn before results and housekeeping get a turn
_TICK_S = 0.1  # housekeeping period (timeouts, expiry) and the longest a lost wake-up costs


@dataclass(kw_only=True, slots=True)
class ServerConfig:
    """How the sidecar serves: threads, limits, where decisions are logged."""

    workers: int = 1  # threads calling the agent (an LLM serialises anyway)
    mode: str = "async"  # the mode trainers are expected to use (a mismatch is logged)
    decide_timeout_s: float = 120.0  # longer: answer skip (valid=False) and retire the thread
    expiry_s: float = 300.0  # trainers silent this long leave the registry
    stop_grace_s: float = 2.0  # on stop, how long in-flight decisions may still finish
    max_retired_workers: int = 4  # threads stuck in the agent we replace before giving up
    log_path: Path | None = None  # decisions as JSON lines, appended
    allow_remote: bool = False  # bind tcp on a non-loopback address
    label: str = ""  # the decider's name, for stats and logs

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"agent server: workers must be >= 1, got {self.workers}")
        if self.mode not in MODES:
            raise ValueError(f"agent server: mode must be one of {MODES}, got {self.mode!r}")
        for name in ("decide_timeout_s", "expiry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"agent server: {name} must be positive, got {getattr(self, name)}"
                )
        if self.stop_grace_s < 0 or self.max_retired_workers < 0:
            raise ValueError("agent server: stop_grace_s and max_retired_workers must be >= 0")


# -- the worker threads ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Job:
    trainer: int
    kind: str  # "hello" or "decide"
    seq: int  # the metrics' minibatch (-1 for hello)
    payload: Any  # the hello's info dict, or the Metrics
    received_at: float
    started_at: float = 0.0
    finished: bool = False
    abandoned: bool = False  # timed out: the result is discarded, the thread retires


@dataclass(slots=True)
class _Done:
    job: _Job
    result: Any
    error: Exception | None
    finished_at: float


class _Workers:
    """Threads that call the agent; each result goes to ``results`` and a byte to the pipe."""

    def __init__(self, agent: Agent, n: int, max_retired: int):
        self.agent = agent
        self.capacity = n
        self.running = 0
        self.retired = 0
        self.max_retired = max_retired
        self.results: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self._wake_w, False)
        for _ in range(n):
            self._spawn()

    @property
    def free(self) -> int:
        return self.capacity - self.running

    def _spawn(self) -> None:
        t = threading.Thread(
            target=self._run, name=f"rudder-agent-{len(self._threads)}", daemon=True
        )
        self._threads.append(t)
        t.start()

    def submit(self, job: _Job) -> None:
        job.started_at = time.monotonic()
        self.running += 1
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            result, error = None, None
            try:
                if job.kind == "hello":
                    self.agent.hello(job.trainer, job.payload)
                else:
                    result = self.agent.decide(job.trainer, job.payload)
            except Exception as e:  # reported to the loop, which answers skip
                error = e
            with self._lock:
                job.finished = True
                retire = job.abandoned
            self.results.put(_Done(job, result, error, time.monotonic()))
            self.wake()
            if retire:
                return  # a replacement thread took this one's place

    def wake(self) -> None:
        """Nudge the loop (thread- and signal-safe)."""
        if self._closed:  # after close the fd number may belong to another file
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def clear_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.wake_r, 4096):
                pass

    def done(self, job: _Job) -> None:
        """The loop took ``job``'s result."""
        if not job.abandoned:
            self.running -= 1

    def abandon(self, job: _Job) -> bool:
        """Give up on a running job; False if it finished meanwhile (its result is queued)."""
        with self._lock:
            if job.finished:
                return False
            job.abandoned = True
        self.running -= 1
        if self.retired < self.max_retired:
            self.retired += 1
            self._spawn()
        else:
            self.capacity -= 1
            log.error(
                "agent: %d worker threads stuck in the agent; %d left",
                self.retired + 1,
                self.capacity,
            )
        return True

    def stop(self, timeout_s: float) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout_s
        alive = 0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            alive += t.is_alive()
        if alive:  # stuck in the agent: leave the pipe open, a late write must not hit a reused fd
            log.warning("agent: %d worker threads still inside the agent at exit", alive)
            return
        self._closed = True
        os.close(self.wake_r)
        os.close(self._wake_w)


# -- the per-trainer registry ------------------------------------------------------------------


@dataclass(slots=True)
class _Trainer:
    trainer: int
    routing_id: bytes
    last_seen: float
    run_id: str = ""
    mode: str = "async"
    info: dict = field(default_factory=dict)
    hello_pending: dict | None = None
    pending: tuple[int, Metrics, float] | None = None  # seq, metrics, received at
    job: _Job | None = None  # the call into the agent in flight (possibly abandoned)
    queued: bool = False
    leaving: bool = False  # said bye while busy
    metrics: int = 0
    superseded: int = 0
    decisions: int = 0
    replace: int = 0
    failed: int = 0
    timed_out: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    last_seq: int = -1

    def stats(self, now: float) -> dict[str, Any]:
        n = self.decisions
        return {
            "connected": True,
            "run_id": self.run_id,
            "mode": self.mode,
            "last_seen_s": round(now - self.last_seen, 3),
            "metrics": self.metrics,
            "superseded": self.superseded,
            "decisions": n,
            "replace": self.replace,
            "replace_pct": 100.0 * self.replace / n if n else 0.0,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "mean_latency_s": self.latency_sum_s / n if n else 0.0,
            "max_latency_s": self.latency_max_s,
            "last_seq": self.last_seq,
            "busy": self.job is not None,
        }


_COUNTERS = (
    "messages",
    "decisions",
    "replace",
    "failed",
    "timed_out",
    "late",
    "superseded",
    "rejected",
    "undeliverable",
    "purged",
)


class AgentServer:
    """Serves ``agent`` on ``endpoint`` (bound at construction) until :meth:`stop` or a signal."""

    def __init__(self, agent: Agent, endpoint: str, config: ServerConfig | None = None):
        self.agent = agent
        self.endpoint = check_endpoint(
            endpoint, allow_remote=(config or ServerConfig()).allow_remote
        )
        self.config = config or ServerConfig()
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self._trainers: dict[int, _Trainer] = {}
        self._ready: collections.deque[int] = collections.deque()
        self._stopping = False
        self._started = time.monotonic()
        self._signal: int | None = None
        # The decision log first: a failure there must not leave a bound socket behind.
        self._log = open(self.config.log_path, "a", buffering=1) if self.config.log_path else None  # noqa: SIM115
        self._ctx = zmq.Context(io_threads=1)
        try:
            self._sock = self._bind()
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise
        self._workers = _Workers(agent, self.config.workers, self.config.max_retired_workers)

    def _bind(self) -> zmq.Socket:
        path = ipc_path(self.endpoint)
        if path is not None:
            _claim_ipc_path(path)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # the transport drops monsters
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable reply raises: we count it
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RCVHWM, 1000)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            self._ctx.term()
            raise ValueError(f"cannot bind the agent on {self.endpoint}: {e}") from None
        if path is not None:
            os.chmod(path, 0o600)  # the protocol has no authentication: only this user connects
        return sock

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = False) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``), then clean up."""
        restore = self._install_signals() if handle_signals else {}
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._workers.wake_r, zmq.POLLIN)
        log.info(
            "agent %s serving on %s (%d worker%s, %s mode)",
            self.config.label or "?",
            self.endpoint,
            self.config.workers,
            "s" * (self.config.workers > 1),
            self.config.mode,
        )
        try:
            while not self._stopping:
                events = dict(poller.poll(int(_TICK_S * 1000)))
                if self._sock in events:
                    self._read_socket()
                self._workers.clear_wake()
                self._take_results()
                now = time.monotonic()
                self._housekeeping(now)
                self._dispatch()
            if self._signal is not None:
                log.info("agent: %s, stopping", signal.Signals(self._signal).name)
            self._finish_in_flight()
        finally:
            self._close()
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask the loop to stop (from any thread or a signal handler)."""
        self._stopping = True
        self._workers.wake()

    def _install_signals(self) -> dict:
        def on_signal(signum: int, _frame: object) -> None:
            self._signal = signum  # logged by the loop: no logging inside a signal handler
            self.stop()

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _read_socket(self) -> None:
        for _ in range(_DRAIN_BATCH):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.counters["messages"] += 1
            rid = frames[0]
            if len(frames) != 2:
                self._reject(
                    rid, ProtocolError("malformed", f"expected 1 frame, got {len(frames) - 1}")
                )
                continue
            try:
                msg = decode(frames[1])
            except ProtocolError as e:
                self._reject(rid, e)
                continue
            try:
                self._handle(rid, msg, time.monotonic())
            except Exception:  # a bug in handling one message must not end the sidecar
                log.exception("agent: failed to handle a %s message", msg.KIND)
                seq = getattr(msg, "seq", None)
                self._send(rid, ErrorReply(reason="internal", detail="the agent failed", seq=seq))

    def _handle(self, rid: bytes, msg: Message, now: float) -> None:
        if isinstance(msg, MetricsReport):
            self._on_metrics(rid, msg, now)
        elif isinstance(msg, Ping):
            st = self._trainers.get(msg.trainer) if msg.trainer is not None else None
            if st is not None:
                st.routing_id, st.last_seen = rid, now
            self._send(rid, Pong(seq=msg.seq, trainer=msg.trainer, registered=st is not None))
        elif isinstance(msg, Hello):
            self._on_hello(rid, msg, now)
        elif isinstance(msg, StatsRequest):
            self._send(rid, self._stats_reply(msg.seq, now))
        elif isinstance(msg, Bye):
            self._on_bye(msg)
        elif isinstance(msg, ErrorReply):  # never answer an error with an error (no ping-pong)
            self.counters["rejected"] += 1
            log.warning("agent: a peer reported %s: %s", msg.reason, msg.detail)
        else:
            why = f"the agent does not accept {msg.KIND!r} messages"
            seq = getattr(msg, "seq", None)
            self._reject(rid, ProtocolError("unexpected_kind", why, kind=msg.KIND, seq=seq))

    def _on_hello(self, rid: bytes, msg: Hello, now: float) -> None:
        st = self._trainers.get(msg.trainer)
        if st is None:
            st = self._trainers[msg.trainer] = _Trainer(msg.trainer, rid, now)
            log.info(
                "agent: trainer %d joined (run %s, %s)", msg.trainer, msg.run_id or "-", msg.mode
            )
        st.routing_id, st.last_seen, st.leaving = rid, now, False
        st.run_id, st.mode = msg.run_id, msg.mode
        st.info = {**msg.info.to_dict(), "run_id": msg.run_id, "mode": msg.mode}
        st.hello_pending = st.info
        if msg.mode != self.config.mode:  # served the same way; worth a note in the log
            log.info(
                "agent: trainer %d runs in %s mode, this agent expects %s",
                msg.trainer,
                msg.mode,
                self.config.mode,
            )
        self._enqueue(st)

    def _on_metrics(self, rid: bytes, msg: MetricsReport, now: float) -> None:
        st = self._trainers.get(msg.trainer)
        if st is None:
            why = f"trainer {msg.trainer} has not said hello (agent restarted?): send hello first"
            e = ProtocolError(
                "unknown_trainer", why, kind=msg.KIND, seq=msg.seq, trainer=msg.trainer
            )
            self._reject(rid, e)
            return
        st.routing_id, st.last_seen = rid, now
        st.metrics += 1
        if (st.job is not None and st.job.abandoned) or self._workers.capacity == 0:
            # The agent is stuck on this trainer's last call: answer now rather than never.
            why = "the agent is stuck on an earlier decision for this trainer"
            self._reply(st, self._failure(msg.trainer, msg.seq, now, now, why))
            return
        if st.pending is not None:
            st.superseded += 1
            self.counters["superseded"] += 1
        st.pending = (msg.seq, msg.metrics, now)
        self._enqueue(st)

    def _on_bye(self, msg: Bye) -> None:
        st = self._trainers.get(msg.trainer)
        if st is None:
            return
        st.pending = st.hello_pending = None
        if st.job is None:
            del self._trainers[msg.trainer]
        else:
            st.leaving = True
        log.info("agent: trainer %d said bye%s", msg.trainer, f" ({msg.reason})" * bool(msg.reason))

    # -- decisions -----------------------------------------------------------------------------

    def _enqueue(self, st: _Trainer) -> None:
        if not st.queued and st.job is None:
            st.queued = True
            self._ready.append(st.trainer)

    def _dispatch(self) -> None:
        while self._ready and self._workers.free > 0 and not self._stopping:
            st = self._trainers.get(self._ready.popleft())
            if st is None:
                continue
            st.queued = False
            if st.job is not None:
                continue
            if st.hello_pending is not None:
                job = _Job(st.trainer, "hello", -1, st.hello_pending, time.monotonic())
                st.hello_pending = None
            elif st.pending is not None:
                seq, metrics, received = st.pending
                job = _Job(st.trainer, "decide", seq, metrics, received)
                st.pending = None
            else:
                continue
            st.job = job
            self._workers.submit(job)

    def _take_results(self) -> None:
        while True:
            try:
                done = self._workers.results.get_nowait()
            except queue.Empty:
                return
            job = done.job
            self._workers.done(job)
            st = self._trainers.get(job.trainer)
            if st is not None and st.job is job:
                st.job = None
            if job.abandoned:
                self.counters["late"] += 1
                log.warning(
                    "agent: a timed-out %s for trainer %d finished after %.1f s",
                    job.kind,
                    job.trainer,
                    done.finished_at - job.started_at,
                )
            elif job.kind == "hello":
                if done.error is not None:
                    log.error("agent: hello of trainer %d failed: %r", job.trainer, done.error)
            elif st is not None:
                self._reply(st, self._decision(job, done))
            if st is None:
                continue
            if st.leaving and st.job is None:
                del self._trainers[st.trainer]
            elif st.hello_pending is not None or st.pending is not None:
                self._enqueue(st)

    def _decision(self, job: _Job, done: _Done) -> AgentDecision:
        if done.error is not None:
            log.warning(
                "agent: decide for trainer %d minibatch %d failed: %r",
                job.trainer,
                job.seq,
                done.error,
            )
            why = f"agent error: {type(done.error).__name__}: {done.error}"
            return self._failure(job.trainer, job.seq, job.received_at, done.finished_at, why)
        if not isinstance(done.result, AgentDecision):
            why = f"agent returned {type(done.result).__name__}, not an AgentDecision"
            log.error("agent: %s", why)
            return self._failure(job.trainer, job.seq, job.received_at, done.finished_at, why)
        return dataclasses.replace(
            done.result,
            trainer=job.trainer,
            minibatch=job.seq,
            latency_s=done.finished_at - job.received_at,
        )

    def _failure(
        self, trainer: int, seq: int, received: float, now: float, why: str
    ) -> AgentDecision:
        self.counters["failed"] += 1
        st = self._trainers.get(trainer)
        if st is not None:
            st.failed += 1
        return AgentDecision(
            trainer=trainer,
            minibatch=seq,
            decision=Decision.SKIP,
            valid=False,
            reason=why[:500],
            latency_s=now - received,
        )

    def _reply(self, st: _Trainer, decision: AgentDecision) -> None:
        st.decisions += 1
        st.replace += decision.decision is Decision.REPLACE
        st.latency_sum_s += decision.latency_s
        st.latency_max_s = max(st.latency_max_s, decision.latency_s)
        st.last_seq = decision.minibatch
        self.counters["decisions"] += 1
        self.counters["replace"] += decision.decision is Decision.REPLACE
        self._send(
            st.routing_id,
            DecisionReply(trainer=st.trainer, seq=decision.minibatch, decision=decision),
        )
        if self._log is not None:
            record = {"time": time.time(), **decision.to_dict()}
            try:
                self._log.write(json.dumps(record) + "\n")
            except OSError as e:
                log.error("agent: cannot write the decision log: %s", e)

    def _housekeeping(self, now: float) -> None:
        timeout = self.config.decide_timeout_s
        for st in list(self._trainers.values()):
            job = st.job
            if job is not None and not job.abandoned and now - job.started_at > timeout:
                if self._workers.abandon(job):
                    st.timed_out += 1
                    self.counters["timed_out"] += 1
                    log.warning(
                        "agent: %s for trainer %d still running after %.0f s; answering skip",
                        job.kind,
                        st.trainer,
                        timeout,
                    )
                    if job.kind == "decide":
                        why = f"decision timed out after {timeout:g} s"
                        self._reply(
                            st, self._failure(st.trainer, job.seq, job.received_at, now, why)
                        )
            elif job is None and now - st.last_seen > self.config.expiry_s:
                del self._trainers[st.trainer]
                self.counters["purged"] += 1
                log.info(
                    "agent: trainer %d silent for %.0f s, forgotten", st.trainer, now - st.last_seen
                )

    # -- replies -------------------------------------------------------------------------------

    def _send(self, rid: bytes, msg: Message) -> None:
        try:
            payload = encode(msg)
        except ProtocolError as e:
            log.error("agent: cannot encode a %s reply: %s", msg.KIND, e)
            payload = encode(
                ErrorReply(reason="internal", detail=str(e)[:200], seq=getattr(msg, "seq", None))
            )
        try:
            self._sock.send_multipart([rid, payload], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # gone (EHOSTUNREACH) or not reading (EAGAIN): its loss
            self.counters["undeliverable"] += 1
            log.debug("agent: reply to %r undeliverable: %s", rid, e)

    def _reject(self, rid: bytes, e: ProtocolError) -> None:
        self.counters["rejected"] += 1
        log.warning("agent: rejected a message: %s", e)
        self._send(
            rid, ErrorReply(reason=e.reason, detail=e.detail[:500], seq=e.seq, trainer=e.trainer)
        )

    def _stats_reply(self, seq: int, now: float) -> StatsReply:
        try:
            agent_stats = _plain_json(self.agent.stats())
        except Exception as e:
            log.warning("agent: agent.stats() failed: %r", e)
            agent_stats = {}
        trainers = {}
        for tid, st in self._trainers.items():
            trainers[tid] = {**st.stats(now), "agent": agent_stats.get(str(tid), {})}
        for tid, stats in agent_stats.items():  # trainers that said bye: their decisions count
            trainers.setdefault(int(tid), {"connected": False, "agent": stats})
        server = {
            **self.counters,
            "decider": self.config.label,
            "endpoint": self.endpoint,
            "mode": self.config.mode,
            "pid": os.getpid(),
            "uptime_s": round(now - self._started, 3),
            "trainers": len(self._trainers),
            "workers": self._workers.capacity,
            "busy_workers": self._workers.running,
            "retired_workers": self._workers.retired,
        }
        return StatsReply(seq=seq, server=server, trainers=trainers)

    # -- shutdown ------------------------------------------------------------------------------

    def _finish_in_flight(self) -> None:
        """Let running decisions finish (up to stop_grace_s) and send them; pending ones go."""
        deadline = time.monotonic() + self.config.stop_grace_s
        while self._workers.running > 0 and time.monotonic() < deadline:
            if self._sock.poll(10, zmq.POLLIN):
                with contextlib.suppress(zmq.Again):
                    self._sock.recv_multipart(zmq.NOBLOCK)  # not served any more
            self._take_results()

    def _close(self) -> None:
        self._sock.close(linger=0)
        path = ipc_path(self.endpoint)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(Exception):
            self.agent.close()
        self._workers.stop(timeout_s=1.0)
        if self._log is not None:
            self._log.close()
        self._ctx.term()
        log.info(
            "agent on %s stopped: %s",
            self.endpoint,
            ", ".join(f"{k} {v}" for k, v in self.counters.items() if v),
        )


def _claim_ipc_path(path: Path) -> None:
    """Make ``path`` bindable: refuse if a live agent listens there, remove a stale file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left by an agent that was killed
        log.info("agent: removed the stale socket file %s", path)
        return
    except OSError as e:
        raise ValueError(f"{path} exists and is not a socket an agent can use: {e}") from None
    finally:
        probe.close()
    raise ValueError(f"ipc://{path} is in use by a running agent; stop it or use another endpoint")


def _plain_json(value: Any) -> Any:
    """``value`` as plain JSON types (stats may hold numpy numbers; keys become strings)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


# -- the agent factory -------------------------------------------------------------------------


def parse_decider(decider: str | DeciderSpec) -> DeciderSpec:
    """``decider`` parsed, or a ValueError that says what is wrong with it and the choices."""
    try:
        return DeciderSpec.parse(decider)
    except ValueError:
        name, _, arg = str(decider).strip().partition(":")
        if name == "llm" and arg:
            raise ValueError(f"unknown decider {decider!r}: llm takes no argument") from None
        raise


def make_agent(decider: str | DeciderSpec, **options: Any) -> Agent:
    """The Agent that serves ``decider``: the LangGraph agent, for every kind of decider.

    ``llm``, ``classifier:PATH`` and the rules (``always``, ``never``, ``every:P``,
    ``heuristic``) all run through ``rudder.controller.graph.build_agent``, so every decider
    gets the same per-trainer history, checkpoints, statistics and Pass@1. ``options``:
    ``llm_url``, ``llm_model``, ``prompt`` (LLM only), ``checkpoint``, ``run_id``.
    """
    spec = parse_decider(decider)
    from rudder.controller.graph import build_agent

    return build_agent(str(spec), **options)
