"""What a client sent: its JSON body and fields, checked; what an error becomes for it.

Kept apart from the server: these rules (Ollama's, with the differences docs/llm.md states)
are what a client sees when it is wrong, and they do not depend on the HTTP stack.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from rudder.llm.engine import EngineError, GenerationCancelledError, InvalidRequestError
from rudder.llm.host import ModelNotFoundError

log = logging.getLogger(__name__)


class HTTPError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(raw: bytes) -> dict:
    """A request body as a JSON object, or HTTPError 400 saying what is wrong with it."""
    try:
        # NaN and Infinity are Python extensions of JSON: Ollama (Go) rejects them, so do we.
        body = json.loads(raw or b"{}", parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid JSON body: {why}") from None
    if not isinstance(body, dict):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "the JSON body must be an object")
    try:  # a lone UTF-16 surrogate ("\ud800") parses, but is no text a model can read
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(
            HTTPStatus.BAD_REQUEST, "invalid JSON body: a string holds a lone UTF-16 surrogate"
        ) from None
    return body


def body_field(body: dict, name: str, kind: type | tuple, default: Any = None) -> Any:
    """``body[name]`` if it is a ``kind`` (or absent: ``default``); else a 400 naming it."""
    value = body.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"field {name!r} has the wrong type")
    return value


def chat_messages(body: dict) -> list[dict]:
    """``/api/chat``'s messages as ``{"role", "content"}`` dicts; a 400 for anything else."""
    msgs = body_field(body, "messages", list, [])
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


def status_of(e: BaseException) -> tuple[HTTPStatus, str]:
    """The status and client-facing message for an exception from a request."""
    if isinstance(e, HTTPError):
        return e.status, str(e)
    if isinstance(e, InvalidRequestError):
        return HTTPStatus.BAD_REQUEST, str(e)
    if isinstance(e, ModelNotFoundError):
        return HTTPStatus.NOT_FOUND, str(e)
    if isinstance(e, GenerationCancelledError):  # only at shutdown reaches a client
        return HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping"
    if isinstance(e, EngineError):
        return HTTPStatus.INTERNAL_SERVER_ERROR, str(e)
    log.error("unexpected error serving a request", exc_info=e)
    return HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error (details in the server log)"
