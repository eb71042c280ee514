"""The agent sidecar: one ZeroMQ ROUTER serving every trainer of a node (docs/protocol.md).

Only the main loop touches the socket (zmq sockets are not thread-safe). It reads and answers
messages; ``Agent.decide`` runs in worker threads (``workers.py``), and which trainer's call
runs next, what times out and who is forgotten is the per-trainer registry's job
(``dispatch.py``). The endpoint and its socket file are handled in ``router_socket.py``.
A failing or timed-out ``decide`` becomes a ``valid=False`` skip sent back; a malformed
message gets an ``error`` reply. Nothing a peer sends and nothing the agent does stops the loop:
every message is handled inside one ``try`` that catches everything, each failure is counted
by its reason (``errors`` in the statistics), and the log is rate-limited per kind of event
with a peer's text quoted, escaped and truncated (``log_limit.py``, ``protocol.brief``).
"""

from __future__ import annotations

import collections
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

from rudder.controller import stats
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
    brief,
    check_endpoint,
    decode,
    encode,
)

log = logging.getLogger(__name__)

_DRAIN_BATCH = 256  # messages read per loop turn before results and housekeeping get a turn
_TICK_S = 0.1  # housekeeping period (timeouts, expiry) and the longest a lost wake-up costs
# A stats reply is reused this long while no trainer joins or leaves: a flood of requests
# costs one build (at most 64 trainers' statistics) per period.
_STATS_TTL_S = 0.1


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
    max_trainers: int = 256  # tracked at once; a hello beyond gets too_many_trainers

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
        if self.max_trainers < 1:
            raise ValueError(f"agent server: max_trainers must be >= 1, got {self.max_trainers}")


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
        self.errors: collections.Counter[str] = collections.Counter()  # rejected, by reason
        # built at, trainers tracked + left (a change of either rebuilds), server, trainers
        self._stats_cache: tuple[float, tuple[int, int], dict, dict] | None = None
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
            max_trainers=self.config.max_trainers,
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
        next_tick = time.monotonic()
        try:
            while not self._stopping:
                events = dict(poller.poll(int(_TICK_S * 1000)))
                if self._sock in events:
                    self._read_socket()
                self._workers.clear_wake()
                try:
                    self._take_results()
                    now = time.monotonic()
                    if now >= next_tick:  # O(trainers): per tick, not per message
                        self._housekeeping(now)
                        next_tick = now + _TICK_S
                    self._dispatch()
                except Exception:  # a bug of ours: logged and counted, the loop goes on
                    self.errors["internal"] += 1
                    self._logs.log("loop", logging.ERROR, "agent: loop step failed", exc_info=True)
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
            try:
                self._serve(frames)
            except Exception:  # a bug in handling one message must not end the sidecar
                self.errors["internal"] += 1
                self._logs.log(
                    "internal", logging.ERROR, "agent: failed to handle a message", exc_info=True
                )
                with contextlib.suppress(Exception):
                    self._send(frames[0], ErrorReply(reason="internal", detail="the agent failed"))

    def _serve(self, frames: list[bytes]) -> None:
        """Decode, check and handle one message from the socket."""
        rid = frames[0]
        if len(frames) != 2:
            why = f"expected 1 frame, got {len(frames) - 1}"
            self._reject(rid, ProtocolError("malformed", why))
            return
        try:
            msg = decode(frames[1])
        except ProtocolError as e:
            self._reject(rid, e)
            return
        try:
            self._handle(rid, msg, time.monotonic())
        except Exception:
            self.errors["internal"] += 1
            self._logs.log(
                "internal",
                logging.ERROR,
                "agent: failed to handle a %s message",
                msg.KIND,
                exc_info=True,
            )
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
            self.errors["from_peer"] += 1
            self._logs.log(
                "peer_error",
                logging.WARNING,
                "agent: a peer reported %s: %s",
                msg.reason,
                brief(msg.detail, 200),
            )
        else:
            why = f"the agent does not accept {msg.KIND!r} messages"
            seq = getattr(msg, "seq", None)
            self._reject(rid, ProtocolError("unexpected_kind", why, kind=msg.KIND, seq=seq))

    def _on_hello(self, rid: bytes, msg: Hello, now: float) -> None:
        st = self._trainers.get(msg.trainer)
        if st is None:
            if len(self._trainers) >= self.config.max_trainers:
                cfg = self.config
                why = (
                    f"this agent tracks at most {cfg.max_trainers} trainers and has "
                    f"{len(self._trainers)}; retry after one leaves (bye, or {cfg.expiry_s:g} s "
                    "of silence), or start it with a larger --max-trainers"
                )
                e = ProtocolError("too_many_trainers", why, kind=msg.KIND, trainer=msg.trainer)
                self._reject(rid, e)
                return
            st = self._trainers[msg.trainer] = TrainerState(msg.trainer, rid, now)
            self._departed.pop(msg.trainer, None)
            self._logs.log(
                "joined",
                logging.INFO,
                "agent: trainer %d joined (run %s, %s)",
                msg.trainer,
                brief(msg.run_id) if msg.run_id else "-",
                msg.mode,
            )
        st.routing_id, st.last_seen, st.leaving = rid, now, False
        st.run_id, st.mode = msg.run_id, msg.mode
        st.info = {**msg.info.to_dict(), "run_id": msg.run_id, "mode": msg.mode}
        st.hello_pending = st.info
        if msg.mode != self.config.mode:  # served the same way; worth a note in the log
            self._logs.log(
                "mode",
                logging.INFO,
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
            self._forget(st, "left")
        else:
            st.leaving = True  # forgotten once its call returns
        self._logs.log(
            "bye",
            logging.INFO,
            "agent: trainer %d said bye%s",
            msg.trainer,
            f" ({brief(msg.reason)})" if msg.reason else "",
        )

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
                self._logs.log(
                    "log_write", logging.ERROR, "agent: cannot write the decision log: %s", e
                )

    def _send(self, rid: bytes, msg: Message) -> None:
        try:
            payload = encode(msg)
        except ProtocolError as e:
            self._logs.log(
                "encode", logging.ERROR, "agent: cannot encode a %s reply: %s", msg.KIND, e
            )
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
        self.errors[e.reason] += 1
        # The detail quotes peer values only through protocol.brief (escaped, short).
        self._logs.log("rejected", logging.WARNING, "agent: rejected a message: %s", str(e)[:300])
        self._send(
            rid, ErrorReply(reason=e.reason, detail=e.detail[:500], seq=e.seq, trainer=e.trainer)
        )

    def _stats_reply(self, seq: int, now: float) -> StatsReply:
        """Counters and the trainers that fit one message (controller/stats.py), reused briefly."""
        cached = self._stats_cache
        key = (len(self._trainers), self.counters["left"] + self.counters["purged"])
        if cached is None or now - cached[0] > _STATS_TTL_S or cached[1] != key:
            cached = self._stats_cache = (now, key, *self._build_stats(now))
        return StatsReply(seq=seq, server=cached[2], trainers=cached[3])

    def _build_stats(self, now: float) -> tuple[dict, dict]:
        # Busy trainers and those with the most decisions first (a flood of idle ids last),
        # then those that left, most recent first.
        order = sorted(
            self._trainers.values(), key=lambda st: (st.job is None, -st.decisions, st.trainer)
        )
        ids = [st.trainer for st in order] + list(reversed(self._departed))

        def entry(tid: int) -> dict:
            try:
                agent = self.agent.stats([tid]).get(tid, {})
            except Exception as e:
                self._logs.log("stats", logging.WARNING, "agent: agent.stats() failed: %r", e)
                agent = {}
            st = self._trainers.get(tid)
            return {**st.stats(now), "agent": agent} if st else {"connected": False, "agent": agent}

        trainers = stats.fit(ids, entry)
        server = {
            **self.counters,
            "errors": dict(self.errors),
            "decider": self.config.label,
            "endpoint": self.endpoint,
            "mode": self.config.mode,
            "pid": os.getpid(),
            "uptime_s": round(now - self._started, 3),
            "trainers": len(self._trainers),
            "max_trainers": self.config.max_trainers,
            "departed": len(self._departed),
            "listed": len(trainers),
            "not_listed": len(ids) - len(trainers),
            "workers": self._workers.capacity,
            "busy_workers": self._workers.running,
            "retired_workers": self._workers.retired,
        }
        return server, trainers

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
