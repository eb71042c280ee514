"""The agent sidecar: one ZeroMQ ROUTER serving every trainer of a node (docs/protocol.md).

Only the main loop touches the socket (zmq sockets are not thread-safe). It reads and answers
messages; ``Agent.decide`` runs in worker threads (``workers.py``), and which trainer's call
runs next, what times out and who is forgotten is the per-trainer registry's job
(``dispatch.py``). The endpoint and its socket file are handled in ``router_socket.py``.
A failing or timed-out ``decide`` becomes a ``valid=False`` skip sent back; a malformed
message gets an ``error`` reply. Nothing a peer sends and nothing the agent does stops the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from rudder.controller.agent import Agent
from rudder.controller.dispatch import Dispatcher, TrainerState
from rudder.controller.router_socket import bind_router, remove_ipc_file
from rudder.decisions import DeciderSpec, Decision
from rudder.protocol import (
    MODES,
    AgentDecision,
    Bye,
    DecisionReply,
    ErrorReply,
    Hello,
    Message,
    MetricsReport,
    Ping,
    Pong,
    ProtocolError,
    StatsReply,
    StatsRequest,
    check_endpoint,
    decode,
    encode,
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


class AgentServer(Dispatcher):
    """Serves ``agent`` on ``endpoint`` (bound at construction) until :meth:`stop` or a signal."""

    def __init__(self, agent: Agent, endpoint: str, config: ServerConfig | None = None):
        self.agent = agent
        self.endpoint = check_endpoint(
            endpoint, allow_remote=(config or ServerConfig()).allow_remote
        )
        self.config = config or ServerConfig()
        self._started = time.monotonic()
        self._signal: int | None = None
        # The decision log first: a failure there must not leave a bound socket behind.
        self._log = open(self.config.log_path, "a", buffering=1) if self.config.log_path else None  # noqa: SIM115
        self._ctx = zmq.Context(io_threads=1)
        try:
            self._sock = bind_router(self._ctx, self.endpoint)
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise
        super().__init__(  # last: it starts the worker threads
            agent,
            workers=self.config.workers,
            max_retired_workers=self.config.max_retired_workers,
            decide_timeout_s=self.config.decide_timeout_s,
            expiry_s=self.config.expiry_s,
        )

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
            st = self._trainers[msg.trainer] = TrainerState(msg.trainer, rid, now)
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

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, st: TrainerState, decision: AgentDecision) -> None:
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
        self._log_decision(decision)

    def _log_final(self, st: TrainerState, decision: AgentDecision) -> None:
        self._log_decision(decision, final_answer=True)

    def _log_decision(self, decision: AgentDecision, **extra: Any) -> None:
        if self._log is not None:
            record = {"time": time.time(), **decision.to_dict(), **extra}
            try:
                self._log.write(json.dumps(record) + "\n")
            except OSError as e:
                log.error("agent: cannot write the decision log: %s", e)

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
        remove_ipc_file(self.endpoint)
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
