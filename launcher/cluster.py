"""Where the processes of a run execute: one "machine" per DistDGL partition.

A :class:`Cluster` turns a :class:`ProcessSpec` (what to run, on which machine) into the local
command that runs it there; the :class:`~rudder.launcher.supervisor.Supervisor` starts and
watches those commands. Three implementations:

- :class:`LocalCluster` (``loopback``): every machine is 127.0.0.1 and commands run as given.
  No root needed, but dgl 2.1 cannot tell two machines on one address apart (machine id from
  interface addresses, shared-memory names from the data name only), so more than one machine
  needs DGL patches on the worker side.
- :class:`~rudder.launcher.netns.EmulatedCluster` (``netns``): one network namespace and one
  private ``/dev/shm`` per machine, joined by a bridge, optionally bandwidth-shaped. Faithful
  to a real cluster without touching DGL; needs root.
- :class:`~rudder.launcher.ssh.SshCluster` (``ssh``): real hosts from a DGL ip_config file.

:func:`make_cluster` picks one by mode name. See docs/cluster.md.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rudder.launcher.netns import EmulatedCluster, cleanup_stale
    from rudder.launcher.ssh import SshCluster

log = logging.getLogger(__name__)

MODES = ("auto", "netns", "loopback", "ssh")
ROLES = ("server", "trainer", "agent")  # agent: a sidecar on a remote host
DEFAULT_SUBNET = "198.18.0.0/24"  # RFC 2544 benchmarking range: never routed on the internet

__all__ = [
    "DEFAULT_SUBNET",
    "MODES",
    "Cluster",
    "ClusterError",
    "EmulatedCluster",
    "LocalCluster",
    "ProcessSpec",
    "SshCluster",
    "cleanup_stale",
    "make_cluster",
    "read_ip_config",
    "write_ip_config",
]

# EmulatedCluster, SshCluster and cleanup_stale live in netns.py and ssh.py, which import this
# module; they are re-exported lazily (PEP 562) so that either import order works.
_LAZY = {
    "EmulatedCluster": "rudder.launcher.netns",
    "cleanup_stale": "rudder.launcher.netns",
    "SshCluster": "rudder.launcher.ssh",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ClusterError(RuntimeError):
    """A cluster could not be set up, or a machine could not be reached."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process of a run: what to execute, and on which machine."""

    name: str  # unique within a run, e.g. "m0-server0", "m1-trainer0"; names the log file
    machine: int  # index of the machine it runs on
    argv: list[str]  # the command, e.g. [sys.executable, "-m", "rudder....worker", ...]
    env: dict[str, str]  # added on top of the launcher's environment
    role: str  # "server" or "trainer"
    cwd: str | None = None  # working directory on that machine; None: the launcher's
    # (uid, gid) to run as instead of the launcher's user: emulated machines only, where the
    # launcher is root (EmulatedCluster.command); None: the launcher's user
    user: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "._-" for c in self.name):
            raise ValueError(
                f"process name must be [A-Za-z0-9._-]+ (a file name), got {self.name!r}"
            )
        if self.role not in ROLES:
            raise ValueError(f"process {self.name}: role must be one of {ROLES}, got {self.role!r}")
        if self.machine < 0:
            raise ValueError(f"process {self.name}: machine must be >= 0, got {self.machine}")
        if not self.argv:
            raise ValueError(f"process {self.name}: argv is empty")
        if self.user is not None and (len(self.user) != 2 or min(self.user) < 0):
            raise ValueError(f"process {self.name}: user must be (uid, gid), got {self.user}")


@runtime_checkable
class Cluster(Protocol):
    """Machines that processes run on. Each implementation is a context manager.

    ``close()`` is idempotent and releases everything the cluster created.
    """

    num_machines: int

    def machine_ip(self, machine: int) -> str:
        """The address other machines reach ``machine`` at (what goes into ip_config)."""
        ...

    def command(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        """The argv and extra environment that, run locally, run ``spec`` on its machine."""
        ...

    def local_cwd(self, spec: ProcessSpec) -> str | None:
        """The working directory for the local process running ``command(spec)``.

        ``spec.cwd`` where the command runs on this host's filesystem; None where the command
        changes directory itself on the far side (ssh).
        """
        ...

    def interface(self, machine: int) -> str | None:
        """The network interface processes on ``machine`` talk through, or None if unknown.

        For ``GLOO_SOCKET_IFNAME`` / ``TP_SOCKET_IFNAME``.
        """
        ...

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every process of this run the cluster can find on its machines.

        The cluster's own helpers are spared. The supervisor calls this when it stops a run, to
        reach what it cannot see locally (remote processes, escaped descendants).
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Cluster: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalCluster:
    """``loopback`` mode: every machine is this host at 127.0.0.1; commands run unchanged.

    Needs no privileges. dgl 2.1 maps every process on 127.0.0.1 to machine 0 and names its
    shared memory after the data only, so with more than one machine the workers must patch
    DGL (per-machine id, shm prefix, graph name); see docs/cluster.md.
    """

    def __init__(self, num_machines: int):
        if num_machines < 1:
            raise ValueError(f"num_machines must be >= 1, got {num_machines}")
        self.num_machines = num_machines

    def machine_ip(self, machine: int) -> str:
        _check_machine(self, machine)
        return "127.0.0.1"

    def command(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        _check_machine(self, spec.machine)
        if spec.user is not None:
            raise ClusterError(f"{spec.name}: running as another user needs the netns cluster")
        return list(spec.argv), dict(spec.env)

    def local_cwd(self, spec: ProcessSpec) -> str | None:
        return spec.cwd

    def interface(self, machine: int) -> str | None:
        _check_machine(self, machine)
        return "lo"

    def signal_all(self, sig: int) -> None:
        """Nothing to do: every process is a local child the supervisor tracks itself."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalCluster(num_machines={self.num_machines})"


def _check_machine(cluster: Cluster, machine: int) -> None:
    if not 0 <= machine < cluster.num_machines:
        raise ValueError(f"machine {machine} out of range: cluster has {cluster.num_machines}")


def read_ip_config(path: str | Path) -> list[tuple[str, int | None]]:
    """The machines of a DGL ip_config file: one ``IP [PORT]`` per line, ``#`` comments."""
    hosts: list[tuple[str, int | None]] = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(f"{path}:{lineno}: expected 'IP [PORT]', got {raw!r}")
        hosts.append((parts[0], int(parts[1]) if len(parts) == 2 else None))
    if not hosts:
        raise ValueError(f"{path}: no machines listed")
    return hosts


def write_ip_config(
    cluster: Cluster, path: str | Path, port: int, servers_per_machine: int = 1
) -> Path:
    """Write the DGL ip_config for ``cluster``: one ``IP PORT`` line per machine.

    A machine's servers listen on ``PORT .. PORT + servers_per_machine - 1``; machines that
    share an address (loopback) get the next free block of ports so they do not collide.
    """
    path = Path(path)
    lines, next_port = [], {}
    for m in range(cluster.num_machines):
        ip = cluster.machine_ip(m)
        lines.append(f"{ip} {next_port.get(ip, port)}\n")
        next_port[ip] = next_port.get(ip, port) + servers_per_machine
    path.write_text("".join(lines))
    return path


def _loopback(num_machines: int) -> LocalCluster:
    log.warning(
        "loopback mode: DistDGL's servers listen on 127.0.0.1, which every local user can "
        "reach, and DGL's RPC unpickles what it receives; use it only where all local users "
        "are trusted (netns mode keeps the machines private; docs/cluster.md)"
    )
    return LocalCluster(num_machines)


def make_cluster(
    mode: str,
    num_machines: int,
    run_id: str,
    bandwidth: str | None = None,
    ip_config: str | Path | None = None,
    *,
    subnet: str = DEFAULT_SUBNET,
    shm_size: str = "50%",
    ssh_cmd: Sequence[str] | None = None,
) -> Cluster:
    """The cluster for ``mode``: ``auto``, ``netns``, ``loopback`` or ``ssh``.

    ``auto`` emulates machines with namespaces where this host allows it and falls back to
    ``loopback`` otherwise, logging why. ``bandwidth`` (tc syntax, e.g. ``"1gbit"``) needs
    namespaces; ``ip_config`` is required for ``ssh`` and ignored otherwise.
    """
    if mode not in MODES:
        raise ValueError(f"unknown cluster mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "ssh":
        if ip_config is None:
            raise ValueError("cluster mode 'ssh' needs an ip_config file (one 'IP [PORT]' a line)")
        if bandwidth is not None:
            raise ValueError("bandwidth shaping is only for emulated clusters, not 'ssh'")
        from rudder.launcher.ssh import SshCluster

        return SshCluster(ip_config, run_id, num_machines=num_machines, ssh_cmd=ssh_cmd)

    from rudder.launcher.netns import EmulatedCluster

    if mode == "auto":
        ok, reason = EmulatedCluster.available()
        if not ok:
            log.warning("network namespaces unavailable (%s); using loopback mode", reason)
            if bandwidth is not None:
                log.warning("bandwidth %s ignored: loopback mode cannot shape traffic", bandwidth)
            return _loopback(num_machines)
        mode = "netns"
    if mode == "loopback":
        if bandwidth is not None:
            raise ValueError("bandwidth shaping needs cluster mode 'netns' (root), not 'loopback'")
        return _loopback(num_machines)
    return EmulatedCluster(
        num_machines, run_id, bandwidth=bandwidth, subnet=subnet, shm_size=shm_size
    )
