"""Use the LLM at a URL, starting the embedded server there first if nothing answers.

``with llm_available(url, model):`` is how the main job and the agent get a real model with no
set-up: a running Ollama (or embedded server) at ``url`` is used as it is; otherwise, if the
URL is on this host, ``rudder llm serve`` is started there and stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from rudder.llm.defaults import DEFAULT_LLM_PORT, DEFAULT_LLM_URL

log = logging.getLogger(__name__)

DEFAULT_URL = DEFAULT_LLM_URL  # the older name (rudder.launcher.train imports it)
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True if an Ollama-compatible server answers ``GET /api/version`` at ``url``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/version", timeout=timeout_s) as r:
            return "version" in json.loads(r.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def llm_available(
    url: str = DEFAULT_LLM_URL,
    model: str | None = None,
    *,
    threads: int = 2,
    ctx: int = 2048,
    nice: int = 0,
    start_timeout_s: float = 180.0,
    log_file: Path | None = None,
) -> Iterator[bool]:
    """Make sure an LLM answers at ``url``; yields True if this call started one.

    ``nice`` lowers a started server's CPU priority (``rudder llm serve --nice``).
    """
    if answers(url):
        log.info("using the LLM server at %s", url)
        yield False
        return
    parsed = urlparse(url)
    if parsed.hostname not in _LOCAL_HOSTS:
        raise RuntimeError(
            f"no LLM server answers at {url}, and it is not on this host to start one"
        )
    from rudder.llm.models import DEFAULT_MODEL

    argv = [
        sys.executable,
        "-m",
        "rudder",
        "llm",
        "serve",
        "--model",
        model or DEFAULT_MODEL,
        "--host",
        parsed.hostname,
        "--port",
        str(parsed.port or DEFAULT_LLM_PORT),
        "--threads",
        str(threads),
        "--ctx",
        str(ctx),
        "--nice",
        str(nice),
    ]
    out = open(log_file, "w") if log_file else subprocess.DEVNULL  # noqa: SIM115
    log.info("no LLM server at %s: starting the embedded one (%s)", url, model or DEFAULT_MODEL)
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not answers(url, timeout_s=0.5):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the embedded LLM server exited with code {proc.returncode}"
                    + (f"; see {log_file}" if log_file else "")
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the embedded LLM server did not answer within {start_timeout_s:g} s"
                )
            time.sleep(0.2)
        yield True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log_file:
            out.close()
