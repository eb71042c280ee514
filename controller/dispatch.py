"""The sidecar's per-trainer registry and the scheduling of calls into the agent.

It exists apart from ``server.py`` so that the socket loop and the bookkeeping of who waits
for what can be read (and reasoned about) separately; :class:`Dispatcher` knows no socket, and
:class:`~rudder.controller.server.AgentServer` adds one by implementing :meth:`Dispatcher._reply`.

Per trainer: one call into the agent at a time (hello or decide); metrics that arrive while it
decides replace the pending ones (stale-request drop, counted); when a decision is sent and
newer metrics wait, they are decided next. A decision the agent knows before it has finished
(the head of a streamed, decision-first answer) is sent at once; the finished answer (its
predictions, for Pass@1) is only logged. A failing or timed-out ``decide`` becomes a
``valid=False`` skip sent back. Trainers silent for ``expiry_s`` leave the registry, and the
agent releases what it holds for them.

Fairness: decisions and hellos wait in two queues, each round-robin over trainers, and when
both wait they take turns, so a flood of hellos from new ids costs a known trainer's decision
at most one hello call (700 such hellos once made a trainer's p99 go from 10 ms to 547 ms).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from rudder.controller.agent import Agent
from rudder.controller.log_limit import LogLimiter
from rudder.controller.workers import Done, Early, Job, Workers
from rudder.decisions import Decision
from rudder.protocol import AgentDecision, Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainerState:
    """What the sidecar knows about one trainer: its pending work and its statistics."""

    trainer: int
    routing_id: bytes
    last_seen: float
    run_id: str = ""
    mode: str = "async"
    info: dict = field(default_factory=dict)
    hello_pending: dict | None = None
    pending: tuple[int, Metrics, float] | None = None  # seq, metrics, received at
    job: Job | None = None  # the call into the agent in flight (possibly abandoned)
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


COUNTERS = (
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
    "left",
)


class Dispatcher:
    """The registry, the queue of trainers with work, and the worker threads that do it.

    Its ``__init__`` starts the worker threads: a subclass calls it last, once nothing else
    can fail. The subclass sends decisions (:meth:`_reply`) and sets ``_stopping``.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        workers: int,
        max_retired_workers: int,
        decide_timeout_s: float,
        expiry_s: float,
        max_trainers: int = 256,
    ):
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._trainers: dict[int, TrainerState] = {}
        self._ready: collections.deque[int] = collections.deque()  # trainers with metrics
        self._hellos: collections.deque[int] = collections.deque()  # ... with a hello to pass
        self._hello_turn = False
        # Trainers that left (bye, expiry), most recent last: the statistics still list them.
        self._departed: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._max_trainers = max_trainers
        self._stopping = False
        self._decide_timeout_s = decide_timeout_s
        self._expiry_s = expiry_s
        self._logs = LogLimiter(log)
        self._workers = Workers(agent, workers, max_retired_workers)

    def _reply(self, st: TrainerState, decision: AgentDecision) -> None:
        """Count ``decision`` and send it to ``st``'s trainer."""
        raise NotImplementedError

    def _enqueue(self, st: TrainerState) -> None:
        if not st.queued and st.job is None:
            st.queued = True
            (self._hellos if st.hello_pending is not None else self._ready).append(st.trainer)

    def _dispatch(self) -> None:
        while (self._ready or self._hellos) and self._workers.free > 0 and not self._stopping:
            # Both waiting: take turns, so hellos cannot hold back known trainers' decisions.
            take_hello = bool(self._hellos) and (not self._ready or self._hello_turn)
            self._hello_turn = not take_hello
            tid = (self._hellos if take_hello else self._ready).popleft()
            st = self._trainers.get(tid)
            if st is None:
                continue
            st.queued = False
            if st.job is not None:
                continue
            if st.hello_pending is not None:
                job = Job(st.trainer, "hello", -1, st.hello_pending, time.monotonic())
                st.hello_pending = None
            elif st.pending is not None:
                seq, metrics, received = st.pending
                job = Job(st.trainer, "decide", seq, metrics, received)
                st.pending = None
            else:
                continue
            st.job = job
            self._workers.submit(job)

    def _answer_early(self, early: Early) -> None:
        job = early.job
        st = self._trainers.get(job.trainer)
        if job.abandoned or job.answered or st is None or st.job is not job:
            return
        job.answered = True
        self._reply(
            st,
            AgentDecision(
                trainer=job.trainer,
                minibatch=job.seq,
                decision=early.decision,
                valid=True,
                reason="early: the decision head of a streamed answer",
                latency_s=early.at - job.received_at,
            ),
        )

    def _log_final(self, st: TrainerState, decision: AgentDecision) -> None:
        """The finished answer of a decision already sent early (nothing is sent)."""

    def _take_results(self) -> None:
        while True:
            try:
                done = self._workers.results.get_nowait()
            except queue.Empty:
                return
            if isinstance(done, Early):
                self._answer_early(done)
                continue
            job = done.job
            self._workers.done(job)
            st = self._trainers.get(job.trainer)
            if st is not None and st.job is job:
                st.job = None
            if job.abandoned:
                self.counters["late"] += 1
                self._logs.log(
                    "late",
                    logging.WARNING,
                    "agent: a timed-out %s for trainer %d finished after %.1f s",
                    job.kind,
                    job.trainer,
                    done.finished_at - job.started_at,
                )
            elif job.kind == "hello":
                if done.error is not None:
                    self._logs.log(
                        "hello_failed",
                        logging.ERROR,
                        "agent: hello of trainer %d failed: %s",
                        job.trainer,
                        _error_text(done.error),
                    )
            elif st is not None and job.answered:
                self._log_final(st, self._decision(job, done))
            elif st is not None:
                self._reply(st, self._decision(job, done))
            if st is None:
                continue
            if st.leaving and st.job is None:
                self._forget(st, "left")
            elif st.hello_pending is not None or st.pending is not None:
                self._enqueue(st)

    def _decision(self, job: Job, done: Done) -> AgentDecision:
        if done.error is not None:
            self._logs.log(
                "decide_failed",
                logging.WARNING,
                "agent: decide for trainer %d minibatch %d failed: %s",
                job.trainer,
                job.seq,
                _error_text(done.error),
            )
            why = f"agent error: {_error_text(done.error)}"
            return self._failure(job.trainer, job.seq, job.received_at, done.finished_at, why)
        if not isinstance(done.result, AgentDecision):
            why = f"agent returned {type(done.result).__name__}, not an AgentDecision"
            self._logs.log("bad_result", logging.ERROR, "agent: %s", why)
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

    def _forget(self, st: TrainerState, counter: str) -> None:
        """Drop ``st`` from the registry (bye or expiry) and let the agent release it."""
        del self._trainers[st.trainer]
        self.counters[counter] += 1
        self._departed[st.trainer] = None
        self._departed.move_to_end(st.trainer)
        while len(self._departed) > self._max_trainers:
            self._departed.popitem(last=False)
        release = getattr(self._workers.agent, "release", None)
        if release is None:
            return
        try:  # quick by contract (no model call): from the loop, between the trainer's calls
            release(st.trainer)
        except Exception as e:
            self._logs.log(
                "release_failed",
                logging.WARNING,
                "agent: releasing trainer %d failed: %s",
                st.trainer,
                _error_text(e),
            )

    def _housekeeping(self, now: float) -> None:
        """Time out stuck calls and forget silent trainers (once per tick: O(trainers))."""
        timeout = self._decide_timeout_s
        for st in list(self._trainers.values()):
            job = st.job
            if job is not None and not job.abandoned and now - job.started_at > timeout:
                if self._workers.abandon(job):
                    st.timed_out += 1
                    self.counters["timed_out"] += 1
                    self._logs.log(
                        "timed_out",
                        logging.WARNING,
                        "agent: %s for trainer %d still running after %.0f s; answering skip",
                        job.kind,
                        st.trainer,
                        timeout,
                    )
                    if job.kind == "decide" and not job.answered:
                        why = f"decision timed out after {timeout:g} s"
                        self._reply(
                            st, self._failure(st.trainer, job.seq, job.received_at, now, why)
                        )
            elif job is None and now - st.last_seen > self._expiry_s:
                self._forget(st, "purged")
                self._logs.log(
                    "purged",
                    logging.INFO,
                    "agent: trainer %d silent for %.0f s, forgotten",
                    st.trainer,
                    now - st.last_seen,
                )


def _error_text(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an agent's exception, one line, bounded (it may quote a peer)."""
    text = f"{type(e).__name__}: {e}"
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."
