"""Where the agent looks for its LLM by default: one place for the URL, the port, the env vars.

Imports nothing but the standard library, so the controller, the CLI and the bench config can
read these without loading the LLM server (llama.cpp) or the model catalog.
"""

from __future__ import annotations

import os

DEFAULT_LLM_HOST = "127.0.0.1"
DEFAULT_LLM_PORT = 11434  # Ollama's
DEFAULT_LLM_URL = f"http://{DEFAULT_LLM_HOST}:{DEFAULT_LLM_PORT}"

LLM_URL_ENV = "RUDDER_LLM_URL"
LLM_MODEL_ENV = "RUDDER_LLM_MODEL"


def llm_url_from_env() -> str:
    """``$RUDDER_LLM_URL``, or :data:`DEFAULT_LLM_URL` when it is unset."""
    return os.environ.get(LLM_URL_ENV, DEFAULT_LLM_URL)


def llm_model_from_env() -> str | None:
    """``$RUDDER_LLM_MODEL``, or None (the agent's default model) when it is unset."""
    return os.environ.get(LLM_MODEL_ENV)
