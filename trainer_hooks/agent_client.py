"""The trainer's link to its node's decision agent, a sidecar process reached over ZeroMQ.

:class:`AgentClient` offers :class:`~rudder.trainer_hooks.channel.DecisionChannel`'s two
methods, ``decision_for(t)`` before minibatch ``t`` and ``offer(metrics)`` after it, over a
DEALER socket connected to the sidecar's ROUTER (protocol: ``rudder/protocol/``,
docs/protocol.md). One request is in flight at a time; the decision echoes its ``seq``.

- **async** (default, the paper's semantics): nothing waits. ``offer`` sends only when no
  request is in flight (otherwise the metrics are dropped: stale-request drop); a decision
  answering the in-flight request takes effect at the next ``decision_for``; until one is
  ready the answer is skip.
- **sync**: ``decision_for`` waits for the answer to the in-flight request, at most
  ``sync_timeout_s`` (then skip; the late answer is ignored).

Reliability follows the ZeroMQ guide's lazy/paranoid pirate: pings on a schedule, a request
or a ping unanswered for too long rebuilds the socket (linger 0) and re-sends hello, with
capped exponential backoff and a retry budget, after which the client answers skip for the
rest of the run. Nothing here raises into the training loop because of the agent.

The client does its work only inside its calls (no thread of its own); a lock makes calls
from different threads (the look-ahead thread, then the main thread at close) safe.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass

import zmq

from rudder.decisions import Decision, replacement_interval
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
    TrainerInfo,
    UnsafeEndpointError,
    check_endpoint,
    decode,
    encode,
)
from rudder.retry import capped_backoff

log = logging.getLogger(__name__)

# hello() at start-up: tries to reach the agent 1 ms apart, doubling up to 50 ms.
HELLO_POLL_INITIAL_S = 0.001
HELLO_POLL_MAX_S = 0.05
_MAX_DRAIN = 64  # messages handled per call at most: a flood cannot stall a minibatch
# Plain ints: pyzmq wraps enum arguments and results in Python enums, ~1 us per call.
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


@dataclass(kw_only=True, slots=True)
class ClientConfig:
    """Where the agent is, who this trainer is, and how long to wait for what."""

    endpoint: str  # the node's sidecar: ipc:///path.sock or tcp://127.0.0.1:PORT
    trainer: int  # the trainer's global rank
    run_id: str = ""
    mode: str = "async"  # "async": never wait; "sync": wait at every decision point
    sync_timeout_s: float = 30.0  # sync: longest wait for one decision, then skip
    # A request older than this: the agent lost it, rebuild. Longer than the sidecar's own
    # decide timeout (120 s), which answers a slow decision with an invalid skip first.
    request_timeout_s: float = 180.0
    ping_interval_s: float = 1.0
    ping_timeout_s: float = 3.0  # a ping unanswered this long: the agent is gone, rebuild
    hello_timeout_s: float = 1.0  # hello() waits at most this long for the connection
    max_reconnects: int = 20  # rebuilds in a row without an answer, then give up (skip)
    backoff_initial_s: float = 0.1  # wait before the first rebuild; doubles per failure ...
    backoff_max_s: float = 5.0  # ... up to this
    send_hwm: int = 8  # messages queued to the agent at most; more are dropped
    allow_remote: bool = False  # connect to a non-loopback tcp address

    def __post_init__(self) -> None:
        check_endpoint(self.endpoint, allow_remote=self.allow_remote)
        if self.mode not in MODES:
            raise ValueError(f"agent client: mode must be one of {MODES}, got {self.mode!r}")
        for name in ("sync_timeout_s", "request_timeout_s", "ping_interval_s", "ping_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"agent client: {name} must be positive, got {getattr(self, name)}"
                )
        if self.hello_timeout_s < 0 or self.backoff_initial_s < 0:
            raise ValueError("agent client: hello_timeout_s and backoff_initial_s must be >= 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("agent client: backoff_max_s must be >= backoff_initial_s")
        if self.max_reconnects < 0 or self.send_hwm < 1:
            raise ValueError("agent client: max_reconnects must be >= 0 and send_hwm >= 1")


@dataclass(slots=True)
class _Request:
    seq: int
    sent_at: float
    payload: bytes  # kept to re-send once if the agent restarted and lost our hello
    resent: bool = False


class AgentClient:
    """A trainer's decision link to a remote agent; the same calls as DecisionChannel.

    Counters: ``requests`` (metrics sent), ``dropped`` (metrics not sent: a request in flight,
    a full send queue, or no agent), ``unsent`` (the part of ``dropped`` that is a fault: no
    agent connected, or its queue full; the rest is the async stale-request drop), ``timeouts``
    (requests given up: sync timeout or ``request_timeout_s``), ``reconnects`` (socket
    rebuilds), ``invalid`` (undecodable or unexpected messages from the agent), ``errors``
    (error replies), ``stale`` (decisions that answered no request in flight, ignored) and
    ``decisions_applied`` ((t, Decision) pairs).

    Outages (the agent unreachable: killed, stopped, not started): ``outages`` (how many),
    ``outage_s`` (their total length, from the last message heard before the loss was
    noticed to the first one after) and ``fallback`` (decision points inside them, which
    answered skip without the agent).
    """

    def __init__(self, config: ClientConfig):
        self.config = config
        self.requests = 0
        self.dropped = 0
        self.unsent = 0
        self.timeouts = 0
        self.reconnects = 0
        self.invalid = 0
        self.errors = 0
        self.stale = 0
        self.outages = 0
        self.outage_s = 0.0
        self.fallback = 0
        self.decisions_applied: list[tuple[int, Decision]] = []
        self.last_decision: AgentDecision | None = None  # the latest one applied
        self.offline = False  # the retry budget is spent: skip for the rest of the run

        self._lock = threading.Lock()
        self._ctx = zmq.Context(io_threads=1)
        self._sock: zmq.Socket | None = None
        self._info: TrainerInfo | None = None
        self._hello_due = False
        self._in_flight: _Request | None = None
        self._ready: AgentDecision | None = None
        self._ping_seq = 0
        self._hello_ping_seq = 0  # the last ping sent before the latest hello
        self._ping_out_at: float | None = None  # when the oldest unanswered ping went out
        self._next_ping_at = 0.0
        self._unsendable_since: float | None = None
        self._failures = 0  # rebuilds since the agent last answered
        self._retry_at = 0.0
        self._closed = False
        self._last_heard = time.monotonic()  # the agent's last valid message (or our start)
        self._since_heard = 0  # decision points since then
        self._outage_since: float | None = None  # an outage in progress, from _last_heard
        self._connect(time.monotonic())

    # -- the DecisionChannel interface ---------------------------------------------------------

    def decision_for(self, t: int) -> Decision:
        """The decision in effect at minibatch ``t``: a decision that has arrived, else skip."""
        with self._lock:
            try:
                now = time.monotonic()
                self._since_heard += 1
                if self._outage_since is not None:
                    self.fallback += 1
                self._service(now)
                if self.config.mode == "sync" and self._in_flight is not None:
                    self._wait_for_answer(now + self.config.sync_timeout_s)
                    if self._in_flight is not None:  # its late answer will count as stale
                        self.timeouts += 1
                        log.warning(
                            "agent: no decision for minibatch %d within %.1f s: skip",
                            self._in_flight.seq,
                            self.config.sync_timeout_s,
                        )
                        self._in_flight = None
                if self._ready is None:
                    return Decision.SKIP
                answer, self._ready = self._ready, None
                decision = answer.decision  # a Decision: the codec builds it from the wire
                self.last_decision = answer
                self.decisions_applied.append((t, decision))
                return decision
            except Exception:  # never into the training loop: a bug here means skip
                log.exception("agent client: decision_for(%d) failed; skip", t)
                return Decision.SKIP

    def offer(self, metrics: Metrics) -> None:
        """Send the metrics of the minibatch just done, unless a request is still in flight."""
        with self._lock:
            try:
                now = time.monotonic()
                self._service(now)
                if self._sock is None or self._in_flight is not None or self._hello_due:
                    self.dropped += 1  # stale-request drop (or no agent to ask)
                    self.unsent += self._in_flight is None
                    return
                payload = encode(
                    MetricsReport(
                        trainer=self.config.trainer, seq=metrics.minibatch, metrics=metrics
                    )
                )
                if not self._send(payload):
                    self.dropped += 1  # the send queue is full or the agent is not connected
                    self.unsent += 1
                    return
                self.requests += 1
                self._in_flight = _Request(metrics.minibatch, now, payload)
            except (ProtocolError, ValueError) as e:
                self.invalid += 1
                log.error(
                    "agent client: cannot send the metrics of minibatch %d: %s",
                    metrics.minibatch,
                    e,
                )
            except Exception:
                log.exception("agent client: offer(%d) failed", metrics.minibatch)

    def replacement_interval(self) -> float:
        """Mean gap, in minibatches, between consecutive decisions taking effect."""
        return replacement_interval([t for t, _ in self.decisions_applied])

    @property
    def applied(self) -> list[tuple[int, Decision]]:
        """DecisionChannel's name for :attr:`decisions_applied`."""
        return self.decisions_applied

    # -- life cycle ----------------------------------------------------------------------------

    def hello(self, info: TrainerInfo | dict | None = None) -> bool:
        """Introduce this trainer (again after every reconnect); True once it is sent.

        Waits at most ``hello_timeout_s`` for the connection (start-up only); if the agent
        is not there yet, hello goes out with the first call that finds it.
        """
        if isinstance(info, dict):
            info = TrainerInfo.from_dict(info)
        with self._lock:
            self._info = info or TrainerInfo()
            self._hello_due = True
            deadline = time.monotonic() + self.config.hello_timeout_s
            for attempt in itertools.count():
                now = time.monotonic()
                try:
                    self._service(now)
                except Exception:
                    log.exception("agent client: hello failed")
                    return False
                if not self._hello_due or now >= deadline or self.offline:
                    return not self._hello_due
                # An agent starting with the run connects within milliseconds; one that is
                # not there is looked for ever more rarely (each try costs a wake-up).
                wait = capped_backoff(attempt, HELLO_POLL_INITIAL_S, HELLO_POLL_MAX_S)
                time.sleep(min(wait, deadline - now))

    def close(self) -> None:
        """Say bye (best effort) and release the socket; later calls answer skip."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                bye = encode(Bye(trainer=self.config.trainer, reason="done"))
                if self._sock is not None and self._info is not None and self._send(bye):
                    self._sock.close(linger=100)  # linger 0 would discard it; 100 ms at most
            except Exception:
                log.exception("agent client: close failed")
            finally:
                if self._outage_since is not None:  # still out at the end of the run
                    self.outage_s += time.monotonic() - self._outage_since
                    self._outage_since = None
                self._close_socket()
                self._ctx.term()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counters(self) -> dict[str, int | float | bool]:
        """The counters as plain values (for the trainer's result record)."""
        applied = self.decisions_applied
        return {
            "requests": self.requests,
            "dropped": self.dropped,
            "unsent": self.unsent,
            "timeouts": self.timeouts,
            "reconnects": self.reconnects,
            "invalid": self.invalid,
            "errors": self.errors,
            "stale": self.stale,
            "outages": self.outages,
            "outage_s": round(self.outage_s, 3),
            "fallback_minibatches": self.fallback,
            "decisions": len(applied),
            "replace_decisions": sum(bool(d) for _, d in applied),
            "replacement_interval": self.replacement_interval(),
            "offline": self.offline,
        }

    # -- the machinery -------------------------------------------------------------------------

    def _service(self, now: float) -> None:
        """Everything due now: rebuild after backoff, read replies, heartbeats, hello."""
        if self._sock is None:
            if self._closed or self.offline or now < self._retry_at:
                return
            self._connect(now)
            if self._sock is None:
                return
            self.reconnects += 1
        self._drain(now)
        if self._sock is not None:
            self._heartbeat(now)

    def _connect(self, now: float) -> None:
        try:  # again at every rebuild: whose socket would we reach now?
            check_endpoint(self.config.endpoint, allow_remote=self.config.allow_remote)
        except UnsafeEndpointError as e:
            self.offline = True  # never talk to another user's socket: skip from now on
            log.error("agent client: %s; answering skip from now on", e)
            return
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)  # a dead agent must never hold up close()
        # Queue only to a completed connection: with no agent, sends fail at once (a drop)
        # instead of piling up metrics that would be stale by the time an agent appears.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.connect(self.config.endpoint)
        self._sock = sock
        self._hello_due = self._info is not None
        self._ping_out_at = None
        self._unsendable_since = None
        self._next_ping_at = now

    def _close_socket(self) -> None:
        if self._sock is not None:
            if not self._sock.closed:
                self._sock.close(linger=0)
            self._sock = None

    def _lost(self, now: float, why: str) -> None:
        """The agent stopped answering: drop the socket, abandon the request, back off."""
        self._close_socket()
        self._in_flight = None  # its answer, if it ever comes, goes to a socket that is gone
        if self._outage_since is None:  # the agent went quiet at its last message, not now
            self._outage_since = self._last_heard
            self.outages += 1
            self.fallback += self._since_heard
        self._failures += 1
        if self._failures > self.config.max_reconnects:
            self.offline = True
            log.error(
                "agent %s: %s; gave up after %d reconnects, answering skip from now on",
                self.config.endpoint,
                why,
                self.config.max_reconnects,
            )
            return
        delay = capped_backoff(
            self._failures - 1, self.config.backoff_initial_s, self.config.backoff_max_s
        )
        self._retry_at = now + delay
        log.warning(
            "agent %s: %s; reconnecting in %.2f s (attempt %d of %d)",
            self.config.endpoint,
            why,
            delay,
            self._failures,
            self.config.max_reconnects,
        )

    def _send(self, payload: bytes) -> bool:
        try:
            self._sock.send(payload, _NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _drain(self, now: float) -> None:
        sock = self._sock
        for _ in range(_MAX_DRAIN):
            if not sock.get(_EVENTS) & _POLLIN:
                return
            try:
                data = sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(data)
            except ProtocolError as e:
                self.invalid += 1
                log.warning("agent client: invalid message from the agent: %s", e)
                continue
            self._handle(msg, now)

    def _handle(self, msg: Message, now: float) -> None:
        self._failures = 0  # any valid message proves the agent is alive
        self._ping_out_at = None
        heard, since, was_out = self._last_heard, self._since_heard, self._outage_since is not None
        self._last_heard, self._since_heard = now, 0
        if was_out:
            self.outage_s += now - self._outage_since
            self._outage_since = None
        req = self._in_flight
        if isinstance(msg, DecisionReply):
            if req is not None and msg.seq == req.seq and msg.trainer == self.config.trainer:
                self._in_flight = None  # the next offer carries the freshest metrics
                self._ready = msg.decision
            else:
                self.stale += 1  # answers a request we gave up on: ignore
        elif isinstance(msg, Pong):
            # Unregistered in answer to a ping sent after our hello: the agent restarted.
            mine = msg.trainer == self.config.trainer and self._info is not None
            if mine and not msg.registered and msg.seq > self._hello_ping_seq:
                if not was_out:  # back before we noticed: still an outage, from the last word
                    self.outages += 1
                    self.outage_s += now - heard
                    self.fallback += since
                self._hello_due = True
                self._flush_hello()
                if req is not None:  # asked of the agent that died: ask its successor, once
                    if req.resent or self._hello_due or not self._send(req.payload):
                        self._in_flight = None
                    else:
                        req.resent = True
        elif isinstance(msg, ErrorReply):
            self._on_error(msg, req)
        else:
            self.invalid += 1
            log.warning("agent client: unexpected %s message from the agent", msg.KIND)

    def _on_error(self, msg: ErrorReply, req: _Request | None) -> None:
        self.errors += 1
        mine = req is not None and msg.seq == req.seq
        if msg.reason == "unknown_trainer" and self._info is not None:
            # The agent restarted behind the same endpoint (zmq reconnected underneath us):
            # introduce ourselves again and, once, re-ask the question it could not place.
            self._hello_due = True
            self._flush_hello()
            if mine and not req.resent and not self._hello_due:
                req.resent = self._send(req.payload)
                if not req.resent:
                    self._in_flight = None
            elif mine:
                self._in_flight = None
            return
        if mine:
            self._in_flight = None  # rejected: it will never be answered
        log.warning("agent rejected a message (seq %s): %s: %s", msg.seq, msg.reason, msg.detail)

    def _heartbeat(self, now: float) -> None:
        cfg = self.config
        if self._ping_out_at is not None and now - self._ping_out_at > cfg.ping_timeout_s:
            self._lost(now, f"no answer to a ping in {cfg.ping_timeout_s:g} s")
            return
        if self._in_flight is not None and now - self._in_flight.sent_at > cfg.request_timeout_s:
            self.timeouts += 1
            self._lost(now, f"no decision within {cfg.request_timeout_s:g} s")
            return
        self._flush_hello()  # before the ping: the agent reads them in order
        if now >= self._next_ping_at:
            self._ping_seq += 1
            if self._send(encode(Ping(seq=self._ping_seq, trainer=cfg.trainer))):
                self._next_ping_at = now + cfg.ping_interval_s
                self._unsendable_since = None
                if self._ping_out_at is None:
                    self._ping_out_at = now
            elif self._unsendable_since is None:
                self._unsendable_since = now  # not connected (yet); retried at every call
            elif now - self._unsendable_since > cfg.ping_timeout_s:
                self._lost(now, f"not connected for {cfg.ping_timeout_s:g} s")

    def _flush_hello(self) -> None:
        if self._hello_due and self._sock is not None and self._info is not None:
            hello = Hello(
                trainer=self.config.trainer,
                run_id=self.config.run_id,
                mode=self.config.mode,
                info=self._info,
            )
            if self._send(encode(hello)):
                self._hello_due = False
                self._hello_ping_seq = self._ping_seq  # pongs to earlier pings predate it

    def _wait_for_answer(self, deadline: float) -> None:
        """Sync mode: poll until the in-flight request is answered, the deadline, or a loss."""
        while self._in_flight is not None and self._sock is not None:
            now = time.monotonic()
            if now >= deadline:
                return
            wake = min(deadline, max(self._next_ping_at, now + 0.001))
            if self._sock.poll(max(1, int((wake - now) * 1000)), zmq.POLLIN):
                self._drain(time.monotonic())
            if self._sock is not None:
                self._heartbeat(time.monotonic())


def ask(endpoint: str, message: Message, *, timeout_s: float = 2.0) -> Message:
    """Send one message to an agent and return its reply (tools: ping, stats).

    Raises TimeoutError if nothing answers within ``timeout_s``, ProtocolError for a reply
    that is not valid protocol.
    """
    check_endpoint(endpoint, allow_remote=True)  # a tool may query a remote agent on purpose
    ctx = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.connect(endpoint)
        sock.send(encode(message))  # queued until connected (no IMMEDIATE here)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                break
            reply = decode(sock.recv())
            if getattr(reply, "seq", None) == getattr(message, "seq", None):
                return reply
        raise TimeoutError(f"no answer from the agent at {endpoint} within {timeout_s:g} s")
    finally:
        sock.close(linger=0)
        ctx.term()
