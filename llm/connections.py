"""Bounded, timed HTTP connections for an asyncio server: what aiohttp leaves to a proxy.

aiohttp parses and limits each request (line and field sizes, the body), but keeps a
connection open for as long as its client takes to send the headers, and accepts as many as
the process has file descriptors. :class:`ConnectionGuard` wraps its protocol factory and adds,
as Go's ``http.Server`` has them:

- a header timeout: a request's headers must be complete ``header_timeout_s`` after the
  connection opened (or after the first byte of a keep-alive connection's next request);
- an idle timeout: a keep-alive connection that sends nothing for ``idle_timeout_s`` closes;
- a header size limit (``max_header_bytes``) over all of a request's header lines together;
- a connection cap: at ``max_connections``, a new connection closes the oldest one that is
  not serving a request, so a flood of slow clients cannot lock out a client that sends its
  request at once (it is the newest, and is served before it could be the oldest).

The server marks the span of each request with :meth:`started` and :meth:`finished`; while
a request is served (a generation may take minutes) no timeout here applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_END_OF_HEADERS = b"\r\n\r\n"


def raise_fd_limit(wanted: int) -> int:
    """Raise the process's open-file limit towards ``wanted`` (up to the hard limit); the new limit.

    Each connection is a descriptor, and the soft limit (often 1,024) is below what a server
    (or a test's crowd of clients) needs; a limit that cannot be raised is returned as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


@dataclass(kw_only=True, frozen=True, slots=True)
class ConnectionLimits:
    """How long and how many; see the module docstring."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    drain_timeout_s: float = 2.0  # after an answer sent before the body was read (e.g. a 413)
    max_header_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in ("header_timeout_s", "idle_timeout_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class _Conn:
    """One connection's state: what the guard needs to time and pick it."""

    __slots__ = (
        "awaiting_first_byte",
        "busy",
        "deadline",
        "draining",
        "header_bytes",
        "idle_since",
        "in_headers",
        "tail",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, now: float, deadline: float):
        self.transport = transport
        self.idle_since = now
        self.deadline = deadline
        self.busy = False
        self.draining = False
        self.in_headers = True
        self.awaiting_first_byte = False
        self.header_bytes = 0
        self.tail = b""


class ConnectionGuard:
    """Wraps an asyncio protocol factory (aiohttp's ``runner.server``) with the limits."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limits: ConnectionLimits,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.factory = factory
        self.limits = limits
        self.clock = clock
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.closed = {"header_timeout": 0, "idle_timeout": 0, "header_size": 0, "evicted": 0}
        self._reported = dict(self.closed)
        self._last_report = clock()

    def __len__(self) -> int:
        return len(self._conns)

    def protocol(self) -> asyncio.Protocol:
        """A new connection's protocol (pass this method to ``loop.create_server``)."""
        return _GuardedProtocol(self, self.factory())

    # -- called by the protocol ----------------------------------------------------------------

    def _opened(self, transport: asyncio.Transport) -> bool:
        """Register a connection; False: refused (every other one is serving a request)."""
        now = self.clock()
        if len(self._conns) >= self.limits.max_connections:
            idle = [c for c in self._conns.values() if not c.busy]
            if not idle:
                transport.abort()
                return False
            oldest = min(idle, key=lambda c: c.idle_since)
            self._close(oldest, "evicted")
        self._conns[transport] = _Conn(transport, now, now + self.limits.header_timeout_s)
        return True

    def _received(self, transport: asyncio.BaseTransport, data: bytes) -> bool:
        """Account for ``data``; False if the connection was closed for it."""
        c = self._conns.get(transport)
        if c is None or c.busy or c.draining or not c.in_headers:
            return True
        now = self.clock()
        if c.awaiting_first_byte:  # a keep-alive connection's next request begins
            c.awaiting_first_byte = False
            c.deadline = now + self.limits.header_timeout_s
        window = c.tail + data
        end = window.find(_END_OF_HEADERS)
        if end >= 0:
            c.in_headers = False  # the server takes it from here (started() follows)
            c.header_bytes += end
        else:
            c.header_bytes += len(data)
            c.tail = window[-(len(_END_OF_HEADERS) - 1) :]
        if c.header_bytes > self.limits.max_header_bytes:
            self._close(c, "header_size")
            return False
        return True

    def _lost(self, transport: asyncio.BaseTransport) -> None:
        self._conns.pop(transport, None)

    # -- called by the server around each request ----------------------------------------------

    def started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request is being served on ``transport``: no timeout applies until it finishes."""
        c = self._conns.get(transport) if transport is not None else None
        if c is not None:
            c.busy, c.in_headers = True, False

    def finished(self, transport: asyncio.BaseTransport | None, body_read: bool) -> None:
        """The request on ``transport`` was answered; ``body_read``: all of its body was read."""
        c = self._conns.get(transport) if transport is not None else None
        if c is None:
            return
        now = self.clock()
        c.busy = False
        c.idle_since = now
        c.header_bytes, c.tail = 0, b""
        if body_read:
            c.in_headers, c.awaiting_first_byte, c.draining = True, True, False
            c.deadline = now + self.limits.idle_timeout_s
        else:  # the server discards the rest of the body for a moment, then closes
            c.in_headers, c.draining = False, True
            c.deadline = now + self.limits.drain_timeout_s

    # -- timeouts --------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Close the connections past their deadline; returns how many."""
        now = self.clock()
        expired = [c for c in self._conns.values() if not c.busy and now >= c.deadline]
        for c in expired:
            idle = c.awaiting_first_byte or c.draining
            self._close(c, "idle_timeout" if idle else "header_timeout")
        self._report(now)
        return len(expired)

    async def sweep_forever(self, interval_s: float = 0.25) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.sweep()

    def close_all(self) -> None:
        for c in list(self._conns.values()):
            c.transport.abort()
        self._conns.clear()

    def _close(self, c: _Conn, why: str) -> None:
        self.closed[why] += 1
        self._conns.pop(c.transport, None)
        if why == "idle_timeout":
            c.transport.close()  # nothing in flight: a clean FIN
        else:
            c.transport.abort()  # a slow or hostile client: no lingering, no buffers kept

    def _report(self, now: float, every_s: float = 10.0) -> None:
        """At most one warning per ``every_s`` with what was closed for cause (not one each)."""
        if now - self._last_report < every_s:
            return
        new = {k: v - self._reported[k] for k, v in self.closed.items() if k != "idle_timeout"}
        if any(new.values()):
            log.warning(
                "closed connections: %d sent no complete headers within %g s, %d sent over %d "
                "header bytes, %d closed at the cap of %d (%d open now)",
                new["header_timeout"],
                self.limits.header_timeout_s,
                new["header_size"],
                self.limits.max_header_bytes,
                new["evicted"],
                self.limits.max_connections,
                len(self._conns),
            )
        self._reported = dict(self.closed)
        self._last_report = now


class _GuardedProtocol(asyncio.Protocol):
    """Forwards every event to the wrapped protocol after the guard has seen it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.forwarding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.guard._opened(transport):  # type: ignore[arg-type]
            self.forwarding = True
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.forwarding and self.guard._received(self.transport, data):  # type: ignore[arg-type]
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.forwarding else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._lost(self.transport)  # type: ignore[arg-type]
        if self.forwarding:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.forwarding:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.forwarding:
            self.inner.resume_writing()
