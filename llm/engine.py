"""One llama.cpp model in memory, answering chat and completion requests.

Backed by xllamacpp (prebuilt llama.cpp wheels; see docs/llm.md for why not
llama-cpp-python). ``parallel`` slots decode side by side (llama.cpp batches them into one
forward pass per token), so one client's request never queues behind another's whole answer;
each slot keeps the KV cache of its last prompt, so a prompt that starts with the same static
system prefix reuses it. Ollama's request vocabulary (``format``, ``options``) is checked and
translated into llama.cpp's in ``options.py``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rudder.llm.options import (
    InvalidRequestError,
    checked_options,
    llama_fields,
    llama_request,
)

__all__ = [
    "Engine",
    "EngineError",
    "GenerationCancelledError",
    "InvalidRequestError",
    "Result",
    "SharedLock",
    "llama_request",
]

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """llama.cpp failed a request (a server fault); the message is safe to show a client."""


class GenerationCancelledError(EngineError):
    """The generation was stopped on request (the client left, or the server is stopping)."""


@dataclass(frozen=True, slots=True)
class Result:
    """A finished generation with Ollama's accounting (durations in nanoseconds)."""

    text: str
    done_reason: str  # "stop" or "length"
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    cached_tokens: int
    load_duration: int = 0


def _delta(chunk: dict) -> str:
    choice = (chunk.get("choices") or [{}])[0]
    return (choice.get("delta") or {}).get("content") or choice.get("text") or ""


def _error(resp: Any) -> Exception:
    """llama.cpp's error reply as an exception.

    Its 4xx (a prompt over the context, a schema it cannot compile) are the client's
    mistakes, anything else the server's.
    """
    err = resp.get("error", resp) if isinstance(resp, dict) else resp
    if isinstance(err, dict):
        message, code = str(err.get("message", err)), err.get("code")
    else:
        message, code = str(err), None
    message = message[:500]
    if isinstance(code, int) and 400 <= code < 500:
        return InvalidRequestError(message)
    return EngineError(message)


def _result(last: dict, text: str, load_ns: int) -> Result:
    """The Result of a finished stream, from its last chunk (the one with the timings)."""
    choice = (last.get("choices") or [{}])[0]
    timings = last.get("timings", {})
    usage = last.get("usage", {})
    cached = int(timings.get("cache_n", 0))
    return Result(
        text=text,
        done_reason="length" if choice.get("finish_reason") == "length" else "stop",
        # Ollama counts every prompt token, those served from the prompt cache included.
        prompt_eval_count=int(timings.get("prompt_n", usage.get("prompt_tokens", 0))) + cached,
        prompt_eval_duration=int(timings.get("prompt_ms", 0.0) * 1e6),
        eval_count=int(timings.get("predicted_n", usage.get("completion_tokens", 0))),
        eval_duration=int(timings.get("predicted_ms", 0.0) * 1e6),
        cached_tokens=cached,
        load_duration=load_ns,
    )


class SharedLock:
    """Many holders in shared mode (requests), or one in exclusive mode (a reload or a swap)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True  # new shared holders wait from here on
            self._cond.wait_for(lambda: self._shared == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Engine:
    """A resident model with ``parallel`` slots of ``ctx`` tokens each.

    ``chat`` and ``complete`` may be called from several threads: up to ``parallel`` run at
    once (llama.cpp queues the rest); a request with another context size (``num_ctx``; none
    means ``ctx``, as in Ollama) reloads the model once the running ones are done. A
    ``cancelled`` callback stops a generation between tokens.
    """

    def __init__(self, path: str | Path, *, threads: int = 2, ctx: int = 2048, parallel: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if parallel < 1:
            raise ValueError(f"parallel slots must be >= 1, got {parallel}")
        self.threads = threads
        self.parallel = parallel
        self._lock = SharedLock()
        self._server = None
        self.ctx = 0
        self.default_ctx = ctx
        self.load_s = 0.0
        self._load(ctx)

    def _load(self, ctx: int) -> int:
        """(Re)load the model with ``ctx`` tokens per slot; returns nanoseconds taken."""
        import xllamacpp as xlc

        t0 = time.perf_counter()
        self._server = None  # free the old context before allocating a new one
        p = xlc.CommonParams()
        p.model.path = str(self.path)
        p.n_ctx = ctx * self.parallel  # llama.cpp divides the context among the slots
        p.n_parallel = self.parallel
        p.cache_prompt = True
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.verbosity = -1
        # xllamacpp also opens llama.cpp's own HTTP listener on a random 127.0.0.1 port; lock
        # it with a key that never leaves this process, so only our API is usable.
        p.api_keys = [secrets.token_urlsafe(32)]
        self._server = xlc.Server(p)
        self.ctx = ctx
        self.load_s = time.perf_counter() - t0
        log.info(
            "loaded %s (%d slots of %d tokens, %d threads) in %.2f s",
            self.path.name,
            self.parallel,
            ctx,
            self.threads,
            self.load_s,
        )
        return int(self.load_s * 1e9)

    def _call(
        self,
        method: str,
        req: dict,
        num_ctx: int | None,
        on_delta: Callable[[str], None] | None,
        cancelled: Callable[[], bool] | None,
    ) -> Result:
        """Run one request; always streamed from llama.cpp, so it can be stopped between tokens.

        ``cancelled`` is polled per token: true stops the generation and frees its slot (the
        client went away, or the server is stopping) with :class:`GenerationCancelledError`.
        """
        load_ns = 0
        num_ctx = num_ctx or self.default_ctx  # as Ollama: none means the default, not the last
        if num_ctx != self.ctx:
            with self._lock.exclusive():
                if num_ctx != self.ctx:  # another request may have reloaded it meanwhile
                    load_ns = self._load(num_ctx)  # Ollama reloads on a new context size too
        chunks: list[dict] = []
        error: list[Any] = []
        stopped = False

        def on_chunk(chunk: Any) -> bool:
            """Return True to make llama.cpp stop (and cancel the task)."""
            nonlocal stopped
            if not isinstance(chunk, dict) or "error" in chunk:
                error.append(chunk)
                return True
            chunks.append(chunk)
            delta = _delta(chunk)
            if delta and on_delta is not None:
                on_delta(delta)
            if cancelled is not None and cancelled():
                stopped = True
                return True
            return False

        with self._lock.shared():
            if self._server is None:
                raise EngineError("the model is unloaded (the server is stopping)")
            try:
                getattr(self._server, method)({**req, "stream": True}, on_chunk)
            except ValueError as e:  # xllamacpp's word for a request it cannot set up (a schema)
                raise InvalidRequestError(str(e)[:500]) from None
        if error:
            raise _error(error[0])
        if stopped:
            raise GenerationCancelledError("the generation was cancelled")
        if not chunks:
            raise EngineError("the model returned nothing")
        last = chunks[-1]
        text = "".join(_delta(c) for c in chunks)
        return _result(last, text, load_ns)

    def chat(
        self,
        messages: list[dict],
        *,
        options: dict | None = None,
        fmt: Any = None,
        on_delta: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Result:
        """A chat completion with the model's own chat template."""
        opts = checked_options(options)
        req = {"messages": messages, **llama_fields(opts, fmt)}
        return self._call("handle_chat_completions", req, opts.get("num_ctx"), on_delta, cancelled)

    def complete(
        self,
        prompt: str,
        *,
        options: dict | None = None,
        fmt: Any = None,
        on_delta: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Result:
        """A raw completion of ``prompt`` (no chat template)."""
        opts = checked_options(options)
        req = {"prompt": prompt, **llama_fields(opts, fmt)}
        return self._call("handle_completions", req, opts.get("num_ctx"), on_delta, cancelled)

    def close(self) -> None:
        with self._lock.exclusive():
            self._server = None
