"""Helpers for the tests that talk to an agent sidecar over real ZeroMQ sockets.

Shared by tests/unit/test_agent_client.py, tests/integration/test_sidecar.py and
tests/security/ (imported: they are plain functions and context managers, not fixtures).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zmq

from rudder.protocol import Message, Metrics, Ping, Pong, decode
from rudder.trainer_hooks.agent_client import ask


def metrics(t: int, trainer: int = 0, **fields: float) -> Metrics:
    """Metrics of minibatch ``t``: zeros but for ``fields`` (each test sets what it needs)."""
    base = dict.fromkeys(Metrics.__dataclass_fields__, 0)
    base.update(trainer=trainer, minibatch=t, **fields)
    return Metrics(**base)


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.01) -> bool:
    """Whether ``pred`` became true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True


def pings(endpoint: str, timeout_s: float = 0.3) -> bool:
    """Whether a sidecar answers a ping on ``endpoint``."""
    try:
        return isinstance(ask(endpoint, Ping(seq=1), timeout_s=timeout_s), Pong)
    except TimeoutError:
        return False


def start_serve(endpoint: str, *extra: str, decider: str = "always") -> subprocess.Popen:
    """A real ``rudder agent serve`` on ``endpoint``, answering pings (its output piped)."""
    argv = [sys.executable, "-m", "rudder", "agent", "serve", "--bind", endpoint]
    proc = subprocess.Popen(
        [*argv, "--decider", decider, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ok = wait_until(lambda: proc.poll() is not None or pings(endpoint), 30.0, 0.05)
    if not ok or proc.poll() is not None:
        stop(proc)
        raise AssertionError(f"the sidecar did not come up:\n{proc.stdout.read()}")
    return proc


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM ``proc`` (if it still runs) and return all it wrote."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@contextmanager
def dealer(endpoint: str) -> Iterator[zmq.Socket]:
    """A bare DEALER socket connected to ``endpoint`` (closed, with its context, on exit)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(0)
        ctx.term()


def reply(sock: zmq.Socket, timeout_s: float = 2.0) -> Message | None:
    """The next message on ``sock``, or None after ``timeout_s``."""
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return decode(sock.recv())
