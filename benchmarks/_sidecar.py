"""A real ``rudder agent serve`` for the benchmarks: started, pinged until it answers, stopped.

Shared by ``bench_agent.py`` and ``bench_sidecar.py`` (run as scripts: this folder is on
``sys.path``). The launcher's ``AgentSidecars`` is not used: it adds a decision log, whose
writes would be measured too.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rudder.protocol import Ping
from rudder.trainer_hooks.agent_client import ask


@contextlib.contextmanager
def running_sidecar(
    endpoint: str, decider: str, checkpoint: Path, run_id: str, ready_timeout_s: float = 60.0
) -> Iterator[subprocess.Popen]:
    """The sidecar process, answering pings on ``endpoint``; terminated on exit."""
    argv = [sys.executable, "-m", "rudder", "-q", "agent", "serve", "--bind", endpoint]
    argv += ["--decider", decider, "--checkpoint", str(checkpoint), "--run-id", run_id]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                ask(endpoint, Ping(seq=1), timeout_s=0.5)
                break
            except TimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the sidecar did not start") from None
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
