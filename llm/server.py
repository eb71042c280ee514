"""An HTTP server that speaks the part of the Ollama API that ChatOllama and ``ollama`` use.

Routes: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``,
``POST /api/chat`` and ``POST /api/generate`` (NDJSON streaming, the default, or one JSON
object with ``"stream": false``), plus ``GET /`` ("Ollama is running"). One model is resident;
a request naming another installed model swaps it in. Binds 127.0.0.1 unless told otherwise.

Built on aiohttp (docs/llm.md says why): the event loop only parses, routes and writes;
llama.cpp work runs in a thread pool, at most ``--parallel`` generations decoding at once
(llama.cpp queues the rest). Every error is a JSON ``{"error": "..."}``: 4xx for the client's
mistakes (bad JSON or fields, options of the wrong type or range, a schema llama.cpp cannot
compile, a prompt over the context, an unknown model), 5xx for the server's, with details in
the server log and never a traceback. A streamed answer holds its 200 headers until the first
token: an error found before it is still a plain 4xx; one after it ends the stream with an
``{"error": ...}`` line, as Ollama does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from aiohttp import web

from rudder.llm import models
from rudder.llm.connections import ConnectionGuard, ConnectionLimits, raise_fd_limit
from rudder.llm.defaults import DEFAULT_LLM_HOST, DEFAULT_LLM_PORT
from rudder.llm.engine import (
    Engine,
    Result,
)
from rudder.llm.host import EngineConfig, ModelHost, base_name
from rudder.llm.requests import HTTPError, body_field, chat_messages, parse_body, status_of

log = logging.getLogger(__name__)

OLLAMA_API_VERSION = "0.12.0"  # the Ollama release whose API this follows
LISTEN_BACKLOG = 128  # pending connections the kernel queues (asyncio accepts them in a batch)
FD_RESERVE = LISTEN_BACKLOG + 128  # descriptors kept free of connections (see _serve)
MAX_BODY_BYTES = 4 * 1024 * 1024  # a full 131,072-token prompt is ~0.5 MB of JSON


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """``rudder llm serve``'s options."""

    model: str = models.DEFAULT_MODEL  # a catalog name or a path to a .gguf file
    host: str = DEFAULT_LLM_HOST
    port: int = DEFAULT_LLM_PORT
    threads: int = 2
    ctx: int = 2048  # tokens per slot
    parallel: int = 2  # slots: requests decoded side by side (one agent per trainer on a node)
    max_requests: int = 64  # generations admitted at once (decoding or queued); more get 503
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_s: float = 30.0  # a request body must arrive within this
    send_timeout_s: float = 60.0  # a client must take each streamed line within this
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_body_bytes < 1024:
            raise ValueError("max_requests must be >= 1 and max_body_bytes >= 1024")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _stats(result: Result, total_ns: int, swap_ns: int) -> dict:
    return {
        "done": True,
        "done_reason": result.done_reason,
        "total_duration": total_ns,
        "load_duration": result.load_duration + swap_ns,
        "prompt_eval_count": result.prompt_eval_count,
        "prompt_eval_duration": result.prompt_eval_duration,
        "eval_count": result.eval_count,
        "eval_duration": result.eval_duration,
    }


def _json(status: HTTPStatus, payload: dict) -> web.Response:
    return web.json_response(payload, status=int(status))


# A generation runs ``run(engine, on_delta, cancelled) -> Result`` in a worker thread.
Run = Callable[[Engine, Callable[[str], None] | None, Callable[[], bool]], Result]


def _empty(engine: Engine, on_delta: object, cancelled: object) -> Result:
    """Ollama loads the model and answers an empty prompt or message list with nothing."""
    return Result("", "load", 0, 0, 0, 0, 0)


class OllamaAPI:
    """The routes, over a :class:`ModelHost` whose blocking work runs in ``executor``."""

    def __init__(self, host: ModelHost, config: ServeConfig, executor: ThreadPoolExecutor):
        self.host = host
        self.config = config
        self.executor = executor
        self.stopping = threading.Event()  # set on shutdown: running generations stop
        self.in_flight = 0
        self.guard: ConnectionGuard | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.middlewares.append(self._middleware)
        for method, path, handler in (
            ("GET", "/", self.root),
            ("GET", "/api/version", self.version),
            ("GET", "/api/tags", self.tags),
            ("GET", "/api/ps", self.ps),
            ("POST", "/api/show", self.show),
            ("POST", "/api/chat", self.chat),
            ("POST", "/api/generate", self.generate),
        ):
            for p in {path, path.rstrip("/") + "/"}:  # "/api/tags/" too, as before
                if method == "GET":  # and HEAD ("HEAD /" is how some clients ping Ollama)
                    app.router.add_get(p, handler)
                else:
                    app.router.add_post(p, handler)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        """Errors as JSON; marks the request's span for the connection guard."""
        if self.guard is not None:
            self.guard.started(request.transport)
        try:
            return await handler(request)
        except web.HTTPException as e:  # aiohttp's own: no route (404), method (405), ...
            if e.status < 400:
                raise
            what = f"{e.reason.lower()}: {request.method} {request.path[:200]}"
            return _json(HTTPStatus(e.status), {"error": what})
        except Exception as e:
            status, message = status_of(e)
            return _json(status, {"error": message})
        finally:
            if self.guard is not None:
                self.guard.finished(request.transport, body_read=request.content.at_eof())

    async def _body(self, request: web.Request) -> dict:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")
        try:  # read() stops at the limit, chunked or not
            raw = await asyncio.wait_for(request.read(), self.config.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes"
            ) from None
        except asyncio.TimeoutError:
            raise HTTPError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the request body did not arrive within {self.config.body_timeout_s:g} s",
            ) from None
        return parse_body(raw)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- routes without a model ------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return _json(HTTPStatus.OK, {"version": OLLAMA_API_VERSION})

    def _tags(self) -> dict:
        entries = []
        for name in sorted(self.host.available()):
            d = self.host.describe(name)
            d.pop("path")
            entries.append(d)
        return {"models": entries}

    async def tags(self, request: web.Request) -> web.Response:
        return _json(HTTPStatus.OK, await self._blocking(self._tags))

    def _ps(self) -> dict:
        d = self.host.describe(self.host.name)
        d.pop("path")
        d.update(
            expires_at="0001-01-01T00:00:00Z", size_vram=0, context_length=self.host.engine.ctx
        )
        return {"models": [d]}

    async def ps(self, request: web.Request) -> web.Response:
        return _json(HTTPStatus.OK, await self._blocking(self._ps))

    def _show(self, name: str) -> dict:
        d = self.host.describe(name)
        card = models.card(base_name(name)) if base_name(name) in models.CATALOG else None
        return {
            "license": card.license if card else "",
            "modelfile": f"FROM {d['path']}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": d["details"],
            "model_info": {"general.architecture": d["details"]["family"]},
            "capabilities": ["completion"],
            "modified_at": d["modified_at"],
        }

    async def show(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = body_field(body, "model", str) or body_field(body, "name", str)
        if not name:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'model' is required")
        return _json(HTTPStatus.OK, await self._blocking(self._show, name))

    # -- generation ------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if body.get("tools"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "tool calling is not supported by this server")
        messages = chat_messages(body)
        options, fmt = self._options(body)

        def run(engine: Engine, on_delta, cancelled) -> Result:
            return engine.chat(
                messages, options=options, fmt=fmt, on_delta=on_delta, cancelled=cancelled
            )

        def shape(obj: dict, text: str) -> dict:
            return {**obj, "message": {"role": "assistant", "content": text}}

        return await self._generation(request, body, run if messages else _empty, shape)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        prompt = body_field(body, "prompt", str, "") or ""
        system = body_field(body, "system", str)
        options, fmt = self._options(body)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]

        def run(engine: Engine, on_delta, cancelled) -> Result:
            if body.get("raw", False):
                return engine.complete(
                    prompt, options=options, fmt=fmt, on_delta=on_delta, cancelled=cancelled
                )
            return engine.chat(
                messages, options=options, fmt=fmt, on_delta=on_delta, cancelled=cancelled
            )

        def shape(obj: dict, text: str) -> dict:
            return {**obj, "response": text}

        return await self._generation(request, body, run if prompt else _empty, shape)

    @staticmethod
    def _options(body: dict) -> tuple[dict, Any]:
        return body_field(body, "options", dict, {}) or {}, body.get("format")

    async def _generation(
        self, request: web.Request, body: dict, run: Run, shape: Callable[[dict, str], dict]
    ) -> web.StreamResponse:
        """Run a generation off the loop; answer whole, or streamed once the first token is out.

        ``shape(obj, text)`` puts text where the route's replies carry it (``message.content``
        or ``response``).
        """
        name = body_field(body, "model", str)
        if not name:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'model' is required")
        stream = body.get("stream", True)
        if not isinstance(stream, bool):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "field 'stream' must be true or false")
        if self.in_flight >= self.config.max_requests:
            raise HTTPError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "server busy, please try again.  maximum pending requests exceeded",
            )
        self.in_flight += 1
        cancel = threading.Event()
        try:
            events = self._start(name, run, stream, cancel)
            kind, value = await events.get()  # the first token, or the end
            if kind == "error":  # nothing is sent yet: a plain error status
                status, message = status_of(value)
                return _json(status, {"error": message})
            if not stream:
                return _json(HTTPStatus.OK, shape(self._final(name, *value), value[0].text))
            return await self._stream(request, name, shape, events, (kind, value))
        finally:
            cancel.set()  # the answer is out, or the client left: stop generating for it
            self.in_flight -= 1

    def _final(self, name: str, result: Result, swap_ns: int, t0_ns: int) -> dict:
        total = time.perf_counter_ns() - t0_ns
        # The model is echoed as requested, as Ollama does (no ":latest" added).
        return {"model": name, "created_at": _now(), **_stats(result, total, swap_ns)}

    def _start(
        self, name: str, run: Run, stream: bool, cancel: threading.Event
    ) -> asyncio.Queue[tuple[str, Any]]:
        """Start the generation in a worker; its deltas, then its end, arrive on the queue.

        The end is ``("done", (result, swap_ns, t0_ns))`` or ``("error", exception)``.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        t0 = time.perf_counter_ns()

        def put(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, item)

        def cancelled() -> bool:
            return cancel.is_set() or self.stopping.is_set()

        def work() -> None:
            try:
                with self.host.use(name) as (engine, swap_ns):
                    on_delta = (lambda text: put(("delta", text))) if stream else None
                    result = run(engine, on_delta, cancelled)
                put(("done", (result, swap_ns, t0)))
            except Exception as e:
                put(("error", e))

        self.executor.submit(work)
        return events

    async def _stream(
        self,
        request: web.Request,
        name: str,
        shape: Callable[[dict, str], dict],
        events: asyncio.Queue[tuple[str, Any]],
        first: tuple[str, Any],
    ) -> web.StreamResponse:
        """NDJSON lines from the first token on; an error after it is the last line."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(obj: dict) -> None:
            line = (json.dumps(obj) + "\n").encode()
            await asyncio.wait_for(resp.write(line), self.config.send_timeout_s)

        kind, value = first
        try:
            while kind == "delta":
                await send(shape({"model": name, "created_at": _now(), "done": False}, value))
                kind, value = await events.get()
            if kind == "done":
                await send(shape(self._final(name, *value), ""))
            else:
                _, message = status_of(value)
                await send({"error": message})  # headers are out: report in-band, as Ollama
            await resp.write_eof()
        except (ConnectionError, asyncio.TimeoutError) as e:
            log.info("client went away during a streamed answer: %s", type(e).__name__)
        return resp


async def _serve(api: OllamaAPI, config: ServeConfig, ready: threading.Event | None) -> None:
    # Each connection is one descriptor; llama.cpp, the model files and the loop need some
    # too. asyncio accepts up to LISTEN_BACKLOG connections in one go before the guard sees
    # any of them, so the cap leaves room for a whole batch: at the cap the guard closes the
    # oldest idle connection, never the listener running out of descriptors (EMFILE makes
    # asyncio stop accepting for a second: measured, /api/version 2.35 s under a flood).
    fds = raise_fd_limit(config.limits.max_connections + FD_RESERVE)
    limits = config.limits
    if fds - FD_RESERVE < limits.max_connections:
        cap = max(1, fds - FD_RESERVE)
        log.warning("open-file limit %d: at most %d connections", fds, cap)
        limits = dataclasses.replace(limits, max_connections=cap)
    runner = web.AppRunner(
        api.app(),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,  # a client that hangs up cancels its request's handler
        keepalive_timeout=limits.idle_timeout_s,
        lingering_time=limits.drain_timeout_s,
        auto_decompress=False,  # as Ollama: a compressed body is no JSON (and no zip bomb)
        shutdown_timeout=5.0,
    )
    await runner.setup()
    guard = ConnectionGuard(runner.server, limits)
    api.guard = guard
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            guard.protocol, config.host, config.port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
    except OSError as e:
        await runner.cleanup()
        raise RuntimeError(f"cannot listen on {config.host}:{config.port}: {e.strerror}") from None
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.ensure_future(guard.sweep_forever())
    host, port = server.sockets[0].getsockname()[:2]
    log.info(
        "serving %s on http://%s:%d (Ollama API %s)",
        api.host.name,
        host,
        port,
        OLLAMA_API_VERSION,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        api.stopping.set()  # running generations stop at their next token
        server.close()
        sweeper.cancel()
        await runner.cleanup()
        guard.close_all()
        log.info("server stopped")


def serve(config: ServeConfig, ready: threading.Event | None = None) -> None:
    """Load the model, serve until SIGTERM/SIGINT, then free everything."""
    host = ModelHost(config.model, EngineConfig(config.threads, config.ctx, config.parallel))
    executor = ThreadPoolExecutor(config.max_requests + 4, thread_name_prefix="llm-request")
    api = OllamaAPI(host, config, executor)
    try:
        asyncio.run(_serve(api, config, ready))
    finally:
        api.stopping.set()
        executor.shutdown(wait=True, cancel_futures=True)
        host.close()
