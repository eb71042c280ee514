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
from dataclasses import dataclass
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


@dataclass(slots=True)
class LLMServer:
    """What :func:`llm_available` yields: true if that call started the server (its pid)."""

    url: str
    pid: int | None = None  # the server this call started (None: one was running already)

    def __bool__(self) -> bool:
        return self.pid is not None

    def cpu_s(self) -> float | None:
        """CPU seconds the server has used so far (all its threads); None if unknown.

        A server this call did not start is found by the local port it listens on.
        """
        import psutil

        pid = self.pid
        try:
            if pid is None:
                port = urlparse(self.url).port or DEFAULT_LLM_PORT
                pid = next(
                    (
                        c.pid
                        for c in psutil.net_connections("tcp")
                        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                    ),
                    None,
                )
            if pid is None:
                return None
            t = psutil.Process(pid).cpu_times()
        except (psutil.Error, ValueError):
            return None
        return t.user + t.system


@contextlib.contextmanager
def llm_available(
    url: str = DEFAULT_LLM_URL,
    model: str | None = None,
    *,
    threads: int = 2,
    ctx: int = 2048,
    parallel: int = 2,
    nice: int = 0,
    start_timeout_s: float = 180.0,
    log_file: Path | None = None,
) -> Iterator[LLMServer]:
    """Make sure an LLM answers at ``url``; yields an :class:`LLMServer` (true if started here).

    ``nice`` lowers a started server's CPU priority (``rudder llm serve --nice``).
    """
    if answers(url):
        log.info("using the LLM server at %s", url)
        yield LLMServer(url)
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
        "--parallel",
        str(parallel),
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
        yield LLMServer(url, proc.pid)
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
