"""Helpers for the tests that run real DistDGL training (imported by those test modules)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest


def rudder(*args, check=True, timeout=600):
    proc = subprocess.run(
        [sys.executable, "-m", "rudder", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"rudder {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def run_processes(run_dir: Path) -> list[psutil.Process]:
    """Live processes started for the run in `run_dir` (found by their environment)."""
    config = str(run_dir.resolve() / "run.json")
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("RUDDER_RUN_CONFIG") == config:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that must take Ctrl-C: a test run started in the background
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_text(proc: subprocess.Popen, log: Path, text: str, timeout_s: float) -> None:
    """Wait until ``log`` holds ``text`` (training got that far); fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and text in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{log.name} never said {text!r}"
        time.sleep(0.5)


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def make_parts(root: Path, family: str | None = None, method: str | None = None) -> Path:
    """A 4,000-node graph in 2 partitions under ``root`` (a few seconds).

    By default a community graph cut by METIS; ``family="ring"`` with ``method="random"`` gives
    one whose locality crosses the partitions (a drift workload's graph).
    """
    rudder(
        "-q",
        "graph",
        "generate",
        "--nodes",
        4000,
        "--avg-degree",
        10,
        "--communities",
        8,
        "--feat-dim",
        16,
        "--classes",
        4,
        "--train-fraction",
        0.3,
        *(("--family", family) if family else ()),
        "--out",
        root / "graph",
    )
    rudder(
        "-q",
        "graph",
        "partition",
        "--graph",
        root / "graph",
        "--parts",
        2,
        *(("--method", method) if method else ()),
        "--out",
        root / "parts",
    )
    return root / "parts"


@pytest.fixture
def no_leftovers():
    """The test leaves no /dev/shm segment and no network namespace behind."""
    shm_before = set(os.listdir("/dev/shm"))
    netns_before = netns_names()
    yield
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    assert netns_names() - netns_before == set()
