"""The LLM server's connection guard: timeouts, header limit and cap, on a fake clock."""

import asyncio

import pytest

from rudder.llm.connections import ConnectionGuard, ConnectionLimits


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.state = "open"

    def abort(self):
        self.state = "aborted"

    def close(self):
        self.state = "closed"


class Inner(asyncio.Protocol):
    """Stands for aiohttp's request handler: records what reached it."""

    def __init__(self):
        self.data = b""
        self.lost = False

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost = True


def make(clock, **limits):
    inners = []

    def factory():
        inners.append(Inner())
        return inners[-1]

    return ConnectionGuard(factory, ConnectionLimits(**limits), clock=clock), inners


def connect(guard):
    t, p = Transport(), guard.protocol()
    p.connection_made(t)
    return t, p


def test_headers_must_be_complete_within_the_header_timeout():
    clock = Clock()
    guard, inners = make(clock, header_timeout_s=2, idle_timeout_s=30)
    slow, p = connect(guard)
    fast, q = connect(guard)
    p.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    q.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    guard.started(fast)
    clock.t = 1.9
    p.data_received(b"X-A: b\r\n")  # trickling does not extend the deadline
    assert guard.sweep() == 0
    clock.t = 2.0
    assert guard.sweep() == 1 and slow.state == "aborted" and fast.state == "open"
    assert inners[0].data == b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n"
    # Serving a request has no deadline here; once answered, the idle timeout runs.
    clock.t = 100.0
    assert guard.sweep() == 0
    guard.finished(fast, body_read=True)
    clock.t = 129.9
    assert guard.sweep() == 0
    clock.t = 130.0
    assert guard.sweep() == 1 and fast.state == "closed"  # idle: a clean close
    assert guard.closed["header_timeout"] == 1 and guard.closed["idle_timeout"] == 1


def test_a_keep_alive_request_gets_the_header_timeout_from_its_first_byte():
    clock = Clock()
    guard, _ = make(clock, header_timeout_s=2, idle_timeout_s=30)
    t, p = connect(guard)
    p.data_received(b"GET / HTTP/1.1\r\n\r\n")
    guard.started(t)
    guard.finished(t, body_read=True)
    clock.t = 20.0
    p.data_received(b"GET / HT")
    clock.t = 21.9
    assert guard.sweep() == 0
    clock.t = 22.0
    assert guard.sweep() == 1 and t.state == "aborted"


def test_header_bytes_are_limited_over_all_lines():
    clock = Clock()
    guard, inners = make(clock, max_header_bytes=1000)
    t, p = connect(guard)
    p.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(10):
        p.data_received(b"X-Filler: " + b"y" * 88 + b"\r\n")
    assert t.state == "aborted" and guard.closed["header_size"] == 1
    assert len(inners[0].data) <= 1000  # what went over was never passed on
    # A body after the headers is not counted as headers.
    t2, p2 = connect(guard)
    p2.data_received(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    assert t2.state == "open"


def test_at_the_cap_the_oldest_idle_connection_makes_room():
    clock = Clock()
    guard, _ = make(clock, max_connections=3)
    busy, p = connect(guard)
    p.data_received(b"GET / HTTP/1.1\r\n\r\n")
    guard.started(busy)
    clock.t = 1.0
    old, _ = connect(guard)
    clock.t = 2.0
    newer, _ = connect(guard)
    clock.t = 3.0
    newest, _ = connect(guard)
    assert old.state == "aborted" and busy.state == newer.state == newest.state == "open"
    assert len(guard) == 3 and guard.closed["evicted"] == 1


def test_when_every_connection_is_serving_a_new_one_is_refused():
    clock = Clock()
    guard, inners = make(clock, max_connections=1)
    t, p = connect(guard)
    p.data_received(b"GET / HTTP/1.1\r\n\r\n")
    guard.started(t)
    refused, q = connect(guard)
    q.data_received(b"GET / HTTP/1.1\r\n\r\n")
    q.connection_lost(None)
    assert refused.state == "aborted" and t.state == "open"
    assert len(inners) == 2 and inners[1].data == b"" and not inners[1].lost


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_connections"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError, match="header_timeout_s"):
        ConnectionLimits(header_timeout_s=0)
