"""Hostile-client probes of an Ollama-API server, as issue 12's probe tried them.

Used by ``test_llm_server_abuse.py`` and by ``llm_probe_table.py`` (the table for any running
server). Each probe returns what a client saw (status, body, seconds), never asserts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

SCHEMA_BAD = {"type": "object", "properties": {"a": {"type": "no-such-type"}}}
LONG_PROMPT = "word " * 6000  # ~6,000 tokens: over a 2,048-token context


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back: the status (0: no HTTP answer), the body, and how long it took."""

    status: int
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)

    def lines(self) -> list[dict]:
        return [json.loads(x) for x in self.body.decode().splitlines() if x.strip()]

    def error(self) -> str | None:
        """The ``error`` of a JSON body or of the last NDJSON line, if any."""
        try:
            last = self.lines()[-1]
        except (ValueError, IndexError):
            return None
        return last.get("error") if isinstance(last, dict) else None


def address(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 80


def post(url: str, path: str, body: bytes | dict, timeout_s: float = 120) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return Reply(r.status, r.read(), time.perf_counter() - t0)
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), time.perf_counter() - t0)
    except (OSError, http.client.HTTPException) as e:
        return Reply(0, repr(e).encode(), time.perf_counter() - t0)


def version(url: str, timeout_s: float = 10) -> Reply:
    """``GET /api/version`` on a fresh connection."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "/api/version", timeout=timeout_s) as r:
            return Reply(r.status, r.read(), time.perf_counter() - t0)
    except (OSError, http.client.HTTPException) as e:
        return Reply(0, repr(e).encode(), time.perf_counter() - t0)


def raw(url: str, data: bytes, timeout_s: float = 30, then_send: Iterator[bytes] = ()) -> Reply:
    """Send ``data`` (then each of ``then_send``) on a new connection; read until it closes."""
    t0 = time.perf_counter()
    out = b""
    with socket.create_connection(address(url), timeout=timeout_s) as s:
        try:
            s.sendall(data)
            for more in then_send:
                s.sendall(more)
        except OSError:
            pass  # the server may answer and close before it has read everything
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
                if _complete(out):
                    break
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else 0
    body = out.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in out else b""
    return Reply(status, body, time.perf_counter() - t0)


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return body.endswith(b"0\r\n\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(
    model: str, log_path, *args: str, timeout_s: float = 120, fd_limit: int | None = None
) -> Iterator[tuple]:
    """``rudder llm serve --model MODEL ARGS`` on a free port: yields (url, process).

    ``fd_limit``: the server's open-file limit, soft and hard (as ``ulimit -n`` sets it).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with open(log_path, "w") as log:
        cmd = [sys.executable, "-m", "rudder", "llm", "serve", "--model", model]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_fds if fd_limit else None,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while version(url, timeout_s=0.5).status != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not come up; see {log_path}")
                time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def slow_header_clients(url: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections that each send part of a request's headers and then stall."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            try:
                s = socket.create_connection(address(url), timeout=5)
                s.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                break  # refused or reset: the server is shedding them (counted by the caller)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (a trickled header byte each)."""
    open_ = 0
    for s in socks:
        try:
            s.settimeout(0.001)
            s.sendall(b"X")
            try:
                if s.recv(1) == b"":
                    continue
            except TimeoutError:
                pass
            open_ += 1
        except OSError:
            continue
    return open_


def bad_requests(model: str) -> dict[str, tuple[str, bytes | dict]]:
    """The client mistakes of the probe: name -> (path, body)."""
    gen = {"model": model, "prompt": "Hi", "stream": False}
    chat = {"model": model, "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    return {
        'temperature: "hot"': ("/api/generate", {**gen, "options": {"temperature": "hot"}}),
        "num_predict: 2**70": ("/api/generate", {**gen, "options": {"num_predict": 2**70}}),
        'seed: "x"': ("/api/generate", {**gen, "options": {"seed": "x"}}),
        "top_k: 1e300": ("/api/generate", {**gen, "options": {"top_k": 1e300}}),
        "stop: 5": ("/api/generate", {**gen, "options": {"stop": 5}}),
        "num_ctx: 10**9": ("/api/generate", {**gen, "options": {"num_ctx": 10**9}}),
        "temperature: NaN": (
            "/api/generate",
            json.dumps(gen)[:-1].encode() + b', "options": {"temperature": NaN}}',
        ),
        "invalid schema in format": ("/api/chat", {**chat, "format": SCHEMA_BAD}),
        "lone surrogate in prompt": (
            "/api/generate",
            json.dumps({**gen, "prompt": "Hi \\ud800"}).replace("\\\\ud800", "\\ud800").encode(),
        ),
        "prompt over the context": ("/api/generate", {**gen, "prompt": LONG_PROMPT}),
        "JSON nested 100,000 deep": (
            "/api/generate",
            b'{"model": "x", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ),
        "format: 3": ("/api/chat", {**chat, "format": 3}),
        'options: "x"': ("/api/generate", {**gen, "options": "x"}),
    }


def streamed(model: str) -> dict[str, tuple[str, dict]]:
    """Mistakes found only once generation starts, in a streamed request."""
    chat = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    return {
        "stream: invalid schema in format": ("/api/chat", {**chat, "format": SCHEMA_BAD}),
        "stream: prompt over the context": (
            "/api/generate",
            {"model": model, "prompt": LONG_PROMPT},
        ),
    }


def summary(r: Reply) -> str:
    """One table cell: the status, and the error, or what a 200 carried."""
    if r.status == 0:
        return f"no HTTP answer ({r.body[:60].decode(errors='replace')})"
    err = r.error()
    if err:
        return f"{r.status} {err[:60]!r}"
    if r.status != 200:
        return f"{r.status} (no JSON error: {r.body[:40]!r})"
    try:
        lines = r.lines()
    except ValueError:
        return f"200, then a body that is not NDJSON: {r.body[:60]!r}"
    text = "".join(x.get("response", x.get("message", {}).get("content", "")) for x in lines)
    return f"200, text {len(text)} chars, done_reason {lines[-1].get('done_reason')!r}"


def head(method: str, path: str, length: bytes) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + b"Content-Length: "
        + length
        + b"\r\nConnection: close\r\n\r\n"
    )
