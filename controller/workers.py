"""The sidecar's worker threads: the only place the agent is called (hello and decide).

It exists apart from ``server.py`` because zmq sockets are not thread-safe: only the main loop
touches the socket, so the threads never reply themselves. Each result goes to a queue plus a
byte on a wake-up pipe that the loop polls next to the socket, and the loop also drains that
queue on every tick, so a missed wake-up can only delay a decision, never lose it (the authors'
worker could sleep forever). A call that outlives its timeout is abandoned: its thread retires
when the agent returns, and a replacement takes its place (up to a limit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from rudder.controller.agent import Agent
from rudder.decisions import Decision

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Job:
    """One call into the agent for one trainer."""

    trainer: int
    kind: str  # "hello" or "decide"
    seq: int  # the metrics' minibatch (-1 for hello)
    payload: Any  # the hello's info dict, or the Metrics
    received_at: float
    started_at: float = 0.0
    finished: bool = False
    abandoned: bool = False  # timed out: the result is discarded, the thread retires
    answered: bool = False  # the trainer already has the decision (an early one)


@dataclass(slots=True)
class Done:
    """A finished :class:`Job`: what the agent returned or raised, and when."""

    job: Job
    result: Any
    error: Exception | None
    finished_at: float


@dataclass(slots=True)
class Early:
    """A running decide :class:`Job` knows its decision (the rest of the answer follows)."""

    job: Job
    decision: Decision
    at: float


class Workers:
    """Threads that call the agent; each result goes to ``results`` and a byte to the pipe."""

    def __init__(self, agent: Agent, n: int, max_retired: int):
        self.agent = agent
        self.capacity = n
        self.running = 0
        self.retired = 0
        self.max_retired = max_retired
        self.results: queue.SimpleQueue[Done | Early] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
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

    def submit(self, job: Job) -> None:
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
                    result = self.agent.decide(job.trainer, job.payload, self._early(job))
            except Exception as e:  # reported to the loop, which answers skip
                error = e
            with self._lock:
                job.finished = True
                retire = job.abandoned
            self.results.put(Done(job, result, error, time.monotonic()))
            self.wake()
            if retire:
                return  # a replacement thread took this one's place

    def _early(self, job: Job):
        def early(decision: Decision) -> None:
            self.results.put(Early(job, Decision(decision), time.monotonic()))
            self.wake()

        return early

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

    def done(self, job: Job) -> None:
        """The loop took ``job``'s result."""
        if not job.abandoned:
            self.running -= 1

    def abandon(self, job: Job) -> bool:
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
