"""An HTTP server that speaks the part of the Ollama API that ChatOllama and ``ollama`` use.

Routes: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``,
``POST /api/chat`` and ``POST /api/generate`` (NDJSON streaming, the default, or one JSON
object with ``"stream": false``), plus ``GET /`` ("Ollama is running"). One model is resident;
a request naming another installed model swaps it in. Every error is a JSON
``{"error": "..."}`` with a 4xx/5xx status: unknown model 404 (listing the models), bad JSON
or fields 400, anything unexpected 500 with the details in the server log, never a traceback
to the client. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rudder.llm import models
from rudder.llm.defaults import DEFAULT_LLM_HOST, DEFAULT_LLM_PORT
from rudder.llm.engine import Engine, EngineError, InvalidRequestError, Result, SharedLock

log = logging.getLogger(__name__)

OLLAMA_API_VERSION = "0.12.0"  # the Ollama release whose API this follows
MAX_BODY_BYTES = 32 * 1024 * 1024


class HTTPError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _base_name(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """``rudder llm serve``'s options."""

    model: str = models.DEFAULT_MODEL  # a catalog name or a path to a .gguf file
    host: str = DEFAULT_LLM_HOST
    port: int = DEFAULT_LLM_PORT
    threads: int = 2
    ctx: int = 2048  # tokens per slot
    parallel: int = 2  # slots: requests decoded side by side (one agent per trainer on a node)


class ModelHost:
    """The resident model and the ones that can be swapped in (installed catalog models)."""

    def __init__(self, config: ServeConfig):
        card, path = models.resolve(config.model)
        self.config = config
        self._extra = {} if card else {Path(path).stem: path}  # a model served from a path
        self.name = card.name if card else Path(path).stem
        self.engine = self._engine(path)
        # Requests share the resident model; swapping in another one waits for them.
        self.lock = SharedLock()

    def _engine(self, path: str | Path) -> Engine:
        c = self.config
        return Engine(path, threads=c.threads, ctx=c.ctx, parallel=c.parallel)

    @contextlib.contextmanager
    def use(self, requested: str):
        """The engine for ``requested`` (swapped in if needed) and the swap time in ns."""
        swap_ns = 0
        while True:
            with self.lock.shared():
                if _base_name(requested) == self.name:
                    yield self.engine, swap_ns
                    return
            with self.lock.exclusive():
                if _base_name(requested) != self.name:
                    swap_ns = self._swap(requested)

    def available(self) -> dict[str, tuple[models.ModelCard | None, Path]]:
        found = {m.name: (m.card, Path(m.path)) for m in models.installed()}
        found.update({n: (None, Path(p)) for n, p in self._extra.items()})
        return found

    def _swap(self, requested: str) -> int:
        """Load ``requested`` in place of the resident model; the load time in ns."""
        name = _base_name(requested)
        avail = self.available()
        if name not in avail:
            choices = ", ".join(sorted(f"{n}:latest" for n in avail)) or "none"
            raise HTTPError(
                HTTPStatus.NOT_FOUND,
                f'model "{requested}" not found, try pulling it first '
                f"(`rudder models fetch NAME`); available: {choices}",
            )
        t0 = time.perf_counter()
        self.engine.close()
        self.engine = self._engine(avail[name][1])
        self.name = name
        return int((time.perf_counter() - t0) * 1e9)

    def describe(self, name: str) -> dict:
        card, path = self.available().get(_base_name(name), (None, None))
        if path is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f'model "{name}" not found')
        stat = path.stat()
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": card.family if card else "",
            "families": [card.family] if card else [],
            "parameter_size": card.parameter_size if card else "",
            "quantization_level": card.quantization if card else "",
        }
        return {
            "name": f"{_base_name(name)}:latest",
            "model": f"{_base_name(name)}:latest",
            "size": stat.st_size,
            "digest": card.sha256 if card else "",
            "modified_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(),
            "details": details,
            "path": path,
        }

    def close(self) -> None:
        self.engine.close()


def _stats(result: Result, total_ns: int) -> dict:
    return {
        "done": True,
        "done_reason": result.done_reason,
        "total_duration": total_ns,
        "load_duration": result.load_duration,
        "prompt_eval_count": result.prompt_eval_count,
        "prompt_eval_duration": result.prompt_eval_duration,
        "eval_count": result.eval_count,
        "eval_duration": result.eval_duration,
    }


def _field(body: dict, name: str, kind: type | tuple, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"field {name!r} has the wrong type")
    return value


def _messages(body: dict) -> list[dict]:
    msgs = _field(body, "messages", list, [])
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"messages[{i}] needs a string 'role'")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"messages[{i}].content must be a string")
        if m.get("images"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "images are not supported by this server")
        out.append({"role": m["role"], "content": content})
    return out


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`ModelHost` of the server."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response has a length or is chunked
    server_version = "rudder-ollama"
    host: ModelHost  # set on the subclass the server creates

    # -- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle's algorithm the body then
        # waits for the client's delayed ACK: a constant ~40 ms per request, measured.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: HTTPStatus, payload: dict | str) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type",
            "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json",
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            raise HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes"
            )
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid JSON body: {e}") from None
        if not isinstance(body, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the JSON body must be an object")
        return body

    def _dispatch(self, routes: dict) -> None:
        route = routes.get(self.path.split("?", 1)[0].rstrip("/") or "/")
        try:
            if route is None:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"no route {self.command} {self.path}")
            route(self)
        except HTTPError as e:
            self._send_json(e.status, {"error": str(e)})
        except (InvalidRequestError, EngineError) as e:
            status = (
                HTTPStatus.BAD_REQUEST
                if isinstance(e, InvalidRequestError)
                else HTTPStatus.INTERNAL_SERVER_ERROR
            )
            self._send_json(status, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s", self.path)
        except Exception:
            log.exception("unexpected error serving %s %s", self.command, self.path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "internal server error (details in the server log)"},
            )

    def do_GET(self) -> None:
        self._dispatch(
            {
                "/": Handler.root,
                "/api/version": Handler.version,
                "/api/tags": Handler.tags,
                "/api/ps": Handler.ps,
            }
        )

    def do_HEAD(self) -> None:
        self._dispatch({"/": Handler.root})

    def do_POST(self) -> None:
        self._dispatch(
            {
                "/api/chat": Handler.chat,
                "/api/generate": Handler.generate,
                "/api/show": Handler.show,
            }
        )

    # -- streaming -----------------------------------------------------------------------------

    def _stream(self, produce) -> None:
        """Send NDJSON lines as HTTP chunks: ``produce(emit)`` calls ``emit(obj)`` per line."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(obj: dict) -> None:
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            produce(emit)
        except (InvalidRequestError, EngineError, HTTPError) as e:
            emit({"error": str(e)})  # headers are out: report in-band, as Ollama does
        self.wfile.write(b"0\r\n\r\n")

    # -- routes --------------------------------------------------------------------------------

    def root(self) -> None:
        self._send_json(HTTPStatus.OK, "Ollama is running")

    def version(self) -> None:
        self._send_json(HTTPStatus.OK, {"version": OLLAMA_API_VERSION})

    def tags(self) -> None:
        entries = []
        for name in sorted(self.host.available()):
            d = self.host.describe(name)
            d.pop("path")
            entries.append(d)
        self._send_json(HTTPStatus.OK, {"models": entries})

    def ps(self) -> None:
        d = self.host.describe(self.host.name)
        d.pop("path")
        d.update(
            expires_at="0001-01-01T00:00:00Z", size_vram=0, context_length=self.host.engine.ctx
        )
        self._send_json(HTTPStatus.OK, {"models": [d]})

    def show(self) -> None:
        body = self._body()
        name = _field(body, "model", str) or _field(body, "name", str)
        if not name:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'model' is required")
        d = self.host.describe(name)
        card = models.card(_base_name(name)) if _base_name(name) in models.CATALOG else None
        self._send_json(
            HTTPStatus.OK,
            {
                "license": card.license if card else "",
                "modelfile": f"FROM {d['path']}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": d["details"],
                "model_info": {"general.architecture": d["details"]["family"]},
                "capabilities": ["completion"],
                "modified_at": d["modified_at"],
            },
        )

    def _generation(self, body: dict, run, shape) -> None:
        """Shared by chat and generate: resolve the model, run, reply streamed or whole.

        ``run(engine, options, fmt, on_delta)`` generates; ``shape(obj, text)`` puts the text
        where the route's replies carry it (``message.content`` or ``response``).
        """
        name = _field(body, "model", str)
        if not name:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'model' is required")
        options = _field(body, "options", dict, {}) or {}
        fmt = body.get("format")
        stream = body.get("stream", True)
        if not isinstance(stream, bool):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'stream' must be true or false")
        t0 = time.perf_counter_ns()
        with self.host.use(name) as (engine, swap_ns):
            model = f"{_base_name(name)}:latest"
            if not stream:
                result = run(engine, options, fmt, None)
                reply = {"model": model, "created_at": _now(), **_stats(result, 0)}
                reply["load_duration"] += swap_ns
                reply["total_duration"] = time.perf_counter_ns() - t0
                self._send_json(HTTPStatus.OK, shape(reply, result.text))
                return

            def produce(emit) -> None:
                result = run(
                    engine,
                    options,
                    fmt,
                    lambda delta: emit(
                        shape({"model": model, "created_at": _now(), "done": False}, delta)
                    ),
                )
                final = {"model": model, "created_at": _now(), **_stats(result, 0)}
                final["load_duration"] += swap_ns
                final["total_duration"] = time.perf_counter_ns() - t0
                emit(shape(final, ""))

            self._stream(produce)

    def chat(self) -> None:
        body = self._body()
        if body.get("tools"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "tool calling is not supported by this server")
        messages = _messages(body)

        def shape(obj: dict, text: str) -> dict:
            return {**obj, "message": {"role": "assistant", "content": text}}

        if not messages:  # Ollama loads the model and answers with an empty message
            self._generation(body, lambda engine, options, fmt, on_delta: _empty(), shape)
            return
        self._generation(
            body,
            lambda engine, options, fmt, on_delta: engine.chat(
                messages, options=options, fmt=fmt, on_delta=on_delta
            ),
            shape,
        )

    def generate(self) -> None:
        body = self._body()
        prompt = _field(body, "prompt", str, "") or ""
        system = _field(body, "system", str)

        def shape(obj: dict, text: str) -> dict:
            return {**obj, "response": text}

        if not prompt:  # Ollama loads the model and answers with an empty response
            self._generation(body, lambda engine, options, fmt, on_delta: _empty(), shape)
            return
        if body.get("raw", False):

            def run(engine, options, fmt, on_delta):
                return engine.complete(prompt, options=options, fmt=fmt, on_delta=on_delta)
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]

            def run(engine, options, fmt, on_delta):
                return engine.chat(messages, options=options, fmt=fmt, on_delta=on_delta)

        self._generation(body, run, shape)


def _empty() -> Result:
    return Result("", "load", 0, 0, 0, 0, 0)


class OllamaServer(ThreadingHTTPServer):
    """The HTTP server around a :class:`ModelHost`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: ModelHost, address: tuple[str, int]):
        handler = type("BoundHandler", (Handler,), {"host": host})
        super().__init__(address, handler)
        self.model_host = host

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def serve(config: ServeConfig, ready: threading.Event | None = None) -> None:
    """Load the model, serve until SIGTERM/SIGINT (or ``shutdown()``), then free everything."""
    host = ModelHost(config)
    try:
        try:
            server = OllamaServer(host, (config.host, config.port))
        except OSError as e:
            raise RuntimeError(
                f"cannot listen on {config.host}:{config.port}: {e.strerror}"
            ) from None
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        log.info("serving %s on %s (Ollama API %s)", host.name, server.url, OLLAMA_API_VERSION)
        if ready is not None:
            ready.set()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            log.info("server stopped")
    finally:
        host.close()
