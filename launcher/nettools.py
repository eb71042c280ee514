"""The Linux plumbing of emulated clusters: tc rates, and namespaces with their processes.

Thin, synchronous wrappers over iproute2 and /proc that raise :class:`ClusterError` naming
the failing command; :mod:`rudder.launcher.netns` builds on them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from rudder.launcher.cluster import ClusterError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")  # where `ip netns` mounts named namespaces

# tbf passes veth's GSO packets (up to 64 KiB) whole only if the bucket holds one; a smaller
# bucket makes it segment them in software. One TCP stream at 10gbit measured 2.9 Gbit/s with
# a 16 KiB bucket, 5.2 with 64 KiB, 7.4 with 128 KiB, 8.5-9.5 with 1 ms (1.25 MB); at 1gbit
# every bucket gave 0.94-0.96 (the rate less headers). A transfer of S bytes takes
# (S - burst) / rate, so the bucket's error is at most max(1 ms, 128 KiB / rate).
_BURST_FLOOR_BYTES = 128 * 1024
_BURST_TIME_S = 0.001
# Queue a tbf holds before dropping, as delay at the rate: 2 ms dropped TCP segments at 1gbit,
# 10 ms barely; 20 ms leaves room for several senders converging on one machine.
TBF_LATENCY = "20ms"

_RATE_UNITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "tibit": 2**40,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "tbps": 8 * 10**12,
}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """Bits per second from tc rate syntax: ``"1gbit"``, ``"50mbit"``, ``"125mbps"`` (bytes)."""
    m = _RATE_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _RATE_UNITS:
        raise ValueError(
            f"bad bandwidth {text!r}: expected a number and a tc unit, e.g. '1gbit', '500mbit'"
            f" (units: {', '.join(_RATE_UNITS)}; 'bps' means bytes per second)"
        )
    bits = int(float(m.group(1)) * _RATE_UNITS[unit])
    if bits < 8000:
        raise ValueError(f"bandwidth {text!r} is below 8 kbit/s")
    return bits


def tbf_burst_bytes(rate_bits: int) -> int:
    """The tbf bucket for ``rate_bits`` per second: one GSO packet or 1 ms of traffic."""
    return max(_BURST_FLOOR_BYTES, int(rate_bits / 8 * _BURST_TIME_S))


def run(argv: list[str], timeout_s: float = 15.0) -> str:
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"`{' '.join(argv)}` did not finish within {timeout_s:g} s") from e
    except OSError as e:
        raise ClusterError(f"`{' '.join(argv)}` could not run: {e}") from e
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        raise ClusterError(f"`{' '.join(argv)}` failed: {msg}")
    return proc.stdout


# -- namespaces and the processes inside them ------------------------------------------------


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_key(path: str | Path) -> tuple[int, int] | None:
    """Identity of a network namespace file (/run/netns/X or /proc/PID/ns/net)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is the named one (what `ip netns pids` does)."""
    key = netns_key(NETNS_DIR / name)
    if key is None:
        return []
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and netns_key(f"/proc/{entry}/ns/net") == key:
            pids.append(int(entry))
    return pids


def kill_and_wait(pids: Iterable[int], timeout_s: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone (zombies count as gone); the survivors.

    Polls instead of psutil.wait_procs: that reaps our own children, which would steal their
    exit status from whoever holds their Popen (the supervisor, a test).
    """
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in procs if is_live(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [p.pid for p in alive]


def is_live(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def delete_netns(name: str) -> None:
    """Kill every process inside the named namespace, then delete it (its links go with it)."""
    left = kill_and_wait(pids_in_netns(name))
    if left:
        log.warning("processes %s in netns %s survived SIGKILL", left, name)
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name])


def exec_in(netns: str, script: str) -> None:
    run(["ip", "netns", "exec", netns, "sh", "-c", script])
