"""One llama.cpp model in memory, answering chat and completion requests.

Backed by xllamacpp (prebuilt llama.cpp wheels; see docs/llm.md for why not
llama-cpp-python). ``parallel`` slots decode side by side (llama.cpp batches them into one
forward pass per token), so one client's request never queues behind another's whole answer;
each slot keeps the KV cache of its last prompt, so a prompt that starts with the same static
system prefix reuses it. Ollama's request vocabulary (``format``, ``options``) is translated
here into llama.cpp's.
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

log = logging.getLogger(__name__)

# Ollama option -> llama.cpp request field (same meaning, different name or none).
_OPTION_NAMES = {
    "temperature": "temperature",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "typical_p": "typical_p",
    "repeat_last_n": "repeat_last_n",
}
# Options that only make sense to a GPU runtime or to Ollama's scheduler; accepted, ignored.
IGNORED_OPTIONS = frozenset(
    {
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_batch",
        "num_keep",
        "use_mmap",
        "use_mlock",
        "numa",
        "low_vram",
        "f16_kv",
        "penalize_newline",
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "tfs_z",
        "vocab_only",
    }
)


class EngineError(RuntimeError):
    """llama.cpp refused or failed a request; the message is safe to show a client."""


class InvalidRequestError(ValueError):
    """The request cannot be served as given (bad option or format)."""


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


def llama_request(options: dict[str, Any] | None, fmt: Any) -> dict[str, Any]:
    """The llama.cpp fields for Ollama ``options`` and ``format``."""
    req: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in _OPTION_NAMES:
            if key == "num_predict" and isinstance(value, int) and value < 0:
                continue  # Ollama: -1 = until done, -2 = fill the context: llama.cpp's default
            if key == "stop" and isinstance(value, str):
                value = [value]
            req[_OPTION_NAMES[key]] = value
        elif key not in IGNORED_OPTIONS and key != "num_ctx":
            raise InvalidRequestError(f"unknown option {key!r}")
    if fmt in (None, ""):
        pass
    elif fmt == "json":
        req["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        # A JSON schema: llama.cpp turns it into a grammar, so the output must match it.
        req["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    else:
        raise InvalidRequestError(f'format must be "json" or a JSON schema object, got {fmt!r}')
    return req


def _result(resp: dict, load_ns: int) -> Result:
    choice = resp["choices"][0]
    text = choice.get("message", {}).get("content") or choice.get("text") or ""
    timings = resp.get("timings", {})
    usage = resp.get("usage", {})
    return Result(
        text=text,
        done_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_eval_count=int(timings.get("prompt_n", usage.get("prompt_tokens", 0))),
        prompt_eval_duration=int(timings.get("prompt_ms", 0.0) * 1e6),
        eval_count=int(timings.get("predicted_n", usage.get("completion_tokens", 0))),
        eval_duration=int(timings.get("predicted_ms", 0.0) * 1e6),
        cached_tokens=int(timings.get("cache_n", 0)),
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
    once (llama.cpp queues the rest); a request with another context size reloads the model
    once the running ones are done.
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
        self, method: str, req: dict, num_ctx: int | None, on_delta: Callable[[str], None] | None
    ) -> Result:
        load_ns = 0
        if num_ctx is not None and num_ctx != self.ctx:
            if not 64 <= num_ctx <= 131072:
                raise InvalidRequestError(f"num_ctx must lie in 64..131072, got {num_ctx}")
            with self._lock.exclusive():
                if num_ctx != self.ctx:  # another request may have reloaded it meanwhile
                    load_ns = self._load(num_ctx)  # Ollama reloads on a new context size too
        with self._lock.shared():
            handler = getattr(self._server, method)
            if on_delta is None:
                resp = handler(req)
                return _result(self._checked(resp), load_ns)
            chunks: list[dict] = []

            def on_chunk(chunk: dict) -> None:
                chunks.append(chunk)
                choice = (chunk.get("choices") or [{}])[0]
                delta = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                if delta:
                    on_delta(delta)

            err = handler({**req, "stream": True}, on_chunk)
            if err is not None:
                self._checked(err)
            if not chunks:
                raise EngineError("the model returned nothing")
            last = chunks[-1]
            text = "".join(
                ((c.get("choices") or [{}])[0].get("delta") or {}).get("content")
                or (c.get("choices") or [{}])[0].get("text")
                or ""
                for c in chunks
            )
            last = {
                **last,
                "choices": [{**(last.get("choices") or [{}])[0], "message": {"content": text}}],
            }
            return _result(last, load_ns)

    @staticmethod
    def _checked(resp: Any) -> dict:
        if isinstance(resp, dict) and "error" in resp:
            err = resp["error"]
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            raise EngineError(msg)
        if not isinstance(resp, dict) or not resp.get("choices"):
            raise EngineError(f"unexpected response from llama.cpp: {str(resp)[:200]}")
        return resp

    def chat(
        self,
        messages: list[dict],
        *,
        options: dict | None = None,
        fmt: Any = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Result:
        """A chat completion with the model's own chat template."""
        req = {"messages": messages, **llama_request(options, fmt)}
        return self._call("handle_chat_completions", req, (options or {}).get("num_ctx"), on_delta)

    def complete(
        self,
        prompt: str,
        *,
        options: dict | None = None,
        fmt: Any = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Result:
        """A raw completion of ``prompt`` (no chat template)."""
        req = {"prompt": prompt, **llama_request(options, fmt)}
        return self._call("handle_completions", req, (options or {}).get("num_ctx"), on_delta)

    def close(self) -> None:
        with self._lock.exclusive():
            self._server = None
