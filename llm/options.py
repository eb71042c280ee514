"""Ollama's request ``options`` and ``format``, checked and translated into llama.cpp's fields.

Ollama decodes ``options`` into a typed struct: a known option of the wrong type is the
client's mistake (400 here), an unknown one is logged and ignored (as Ollama does, so a client
written for a newer Ollama still works). Values are also checked against what llama.cpp can
hold (32-bit integers, finite 32-bit floats), so nothing a client sends reaches llama.cpp as
a value it would fail on.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

INT32 = (-(2**31), 2**31 - 1)
FLOAT32_MAX = 3.4028234663852886e38
MAX_CTX = 131072  # tokens per slot: the KV cache is allocated up front, so a client cannot ask more

# Ollama's option -> (type, the llama.cpp request field or None when llama.cpp has no use for it).
_INT, _FLOAT, _BOOL, _STRINGS = "integer", "number", "boolean", "list of strings"
OLLAMA_OPTIONS: dict[str, tuple[str, str | None]] = {
    "num_ctx": (_INT, None),  # the engine's context size: handled by the engine (a reload)
    "seed": (_INT, "seed"),
    "num_predict": (_INT, "max_tokens"),
    "top_k": (_INT, "top_k"),
    "repeat_last_n": (_INT, "repeat_last_n"),
    "temperature": (_FLOAT, "temperature"),
    "top_p": (_FLOAT, "top_p"),
    "min_p": (_FLOAT, "min_p"),
    "typical_p": (_FLOAT, "typical_p"),
    "repeat_penalty": (_FLOAT, "repeat_penalty"),
    "presence_penalty": (_FLOAT, "presence_penalty"),
    "frequency_penalty": (_FLOAT, "frequency_penalty"),
    "stop": (_STRINGS, "stop"),
    # GPU, threading and scheduler options: meaningful to Ollama's runner only; checked, ignored.
    "num_keep": (_INT, None),
    "num_batch": (_INT, None),
    "num_gpu": (_INT, None),
    "main_gpu": (_INT, None),
    "num_thread": (_INT, None),
    "mirostat": (_INT, None),
    "mirostat_tau": (_FLOAT, None),
    "mirostat_eta": (_FLOAT, None),
    "tfs_z": (_FLOAT, None),
    "low_vram": (_BOOL, None),
    "f16_kv": (_BOOL, None),
    "logits_all": (_BOOL, None),
    "vocab_only": (_BOOL, None),
    "use_mmap": (_BOOL, None),
    "use_mlock": (_BOOL, None),
    "numa": (_BOOL, None),
    "penalize_newline": (_BOOL, None),
}
IGNORED_OPTIONS = frozenset(k for k, (_, field) in OLLAMA_OPTIONS.items() if field is None)
_LOGGED_UNKNOWN = 5  # names per warning: a request with 10,000 unknown keys logs one short line


class InvalidRequestError(ValueError):
    """The request cannot be served as given (bad option, format or prompt): a 4xx."""


def _typed(key: str, kind: str, value: Any) -> Any:
    """``value`` as option ``key`` of ``kind`` holds it, or InvalidRequestError."""
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise InvalidRequestError(f"option {key!r} must be of type boolean")
        return value
    if kind == _STRINGS:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise InvalidRequestError(f"option {key!r} must be a list of strings")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"option {key!r} must be of type {kind}")
    if kind == _FLOAT:
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise InvalidRequestError(f"option {key!r} is out of range: {value:.6g}")
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"option {key!r} is out of range")
        value = int(value)  # JSON has one number type: Ollama truncates 1.5 to 1, so do we
    lo, hi = (INT32[0], 2**32 - 1) if key == "seed" else INT32
    if not lo <= value <= hi:
        raise InvalidRequestError(f"option {key!r} is out of range: {value:.6g}")
    return value


def checked_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The known options with checked values; unknown names are logged and dropped."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in (options or {}).items():
        spec = OLLAMA_OPTIONS.get(key)
        if spec is None:
            unknown.append(key)
        elif value is not None:  # Ollama skips a null option
            out[key] = _typed(key, spec[0], value)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:_LOGGED_UNKNOWN])
        extra = len(unknown) - _LOGGED_UNKNOWN
        more = f" and {extra} more" if extra > 0 else ""
        log.warning("invalid option(s) ignored: %s%s", shown, more)
    num_ctx = out.get("num_ctx")
    if num_ctx is not None and not 1 <= num_ctx <= MAX_CTX:
        raise InvalidRequestError(f"option 'num_ctx' must lie in 1..{MAX_CTX}, got {num_ctx}")
    return out


def llama_request(options: dict[str, Any] | None, fmt: Any) -> dict[str, Any]:
    """The llama.cpp fields for Ollama ``options`` and ``format`` (InvalidRequestError if bad)."""
    return llama_fields(checked_options(options), fmt)


def llama_fields(checked: dict[str, Any], fmt: Any) -> dict[str, Any]:
    """The llama.cpp fields for options already passed through :func:`checked_options`."""
    req: dict[str, Any] = {}
    for key, value in checked.items():
        field = OLLAMA_OPTIONS[key][1]
        if field is None:
            continue
        if key == "num_predict" and value < 0:
            continue  # Ollama: -1 = until done, -2 = fill the context: llama.cpp's default
        if key == "seed" and value < 0:
            continue  # Ollama: -1 = a random seed: llama.cpp's default
        req[field] = value
    if fmt in (None, ""):
        pass
    elif fmt == "json":
        req["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        # A JSON schema: llama.cpp turns it into a grammar, so the output must match it (a
        # schema it cannot compile is reported when the request starts: a 400 then).
        req["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    else:
        shown = repr(fmt)[:60]
        raise InvalidRequestError(f'format must be "json" or a JSON schema object, got {shown}')
    return req
