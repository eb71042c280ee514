"""A SLURM allocation as a DGL ip_config: one ``IP PORT`` line per allocated node.

SLURM names nodes in a compressed list (``node[01-04,07]``); ``scontrol show hostnames``
is the one authority on expanding it (bracket syntax has corner cases: padding, nested
ranges, suffixes), so it is asked rather than reimplemented. DGL finds a process's machine
by matching local interface addresses against ip_config, so each host name is resolved to
an IPv4 address here, once, on the launching node. A name that resolves to a loopback
address (Debian's ``127.0.1.1 hostname`` line in ``/etc/hosts`` is the usual cause) would
leave every other node unable to reach that one's servers: it is an error naming the host.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

NODELIST_ENV = "SLURM_JOB_NODELIST"
NUM_NODES_ENV = "SLURM_JOB_NUM_NODES"


class SlurmError(ValueError):
    """The allocation cannot be turned into an ip_config; the message says why."""


@dataclass(frozen=True)
class SlurmNode:
    """An allocated node: the name SLURM gives it and the address DGL will match."""

    host: str
    ip: str


def expand_nodelist(nodelist: str, scontrol: str = "scontrol") -> list[str]:
    """The host names of a SLURM node list, in allocation order (``scontrol show hostnames``)."""
    exe = shutil.which(scontrol)
    if exe is None:
        raise SlurmError(f"{scontrol!r} not found on PATH: run this inside a SLURM allocation")
    try:
        done = subprocess.run(
            [exe, "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{scontrol} show hostnames {nodelist!r} did not answer in 30 s") from None
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        raise SlurmError(f"{scontrol} show hostnames {nodelist!r} failed: {why}")
    hosts = done.stdout.split()
    if not hosts:
        raise SlurmError(f"{scontrol} show hostnames {nodelist!r} listed no hosts")
    return hosts


def resolve_ipv4(host: str) -> str:
    """``host``'s first IPv4 address, as the other nodes would reach it."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SlurmError(f"{host}: cannot resolve the host name: {e.strerror}") from None
    return str(infos[0][4][0])


def slurm_nodes(
    env: Mapping[str, str] | None = None,
    nodelist: str | None = None,
    scontrol: str = "scontrol",
    resolve: Callable[[str], str] | None = None,
) -> list[SlurmNode]:
    """The allocation's nodes with their addresses, checked for what would break DGL."""
    env = os.environ if env is None else env
    nodelist = nodelist or env.get(NODELIST_ENV)
    if not nodelist:
        raise SlurmError(
            f"${NODELIST_ENV} is not set: run inside an allocation (sbatch/salloc) or pass "
            "--nodelist"
        )
    hosts = expand_nodelist(nodelist, scontrol)
    expected = env.get(NUM_NODES_ENV)
    if expected and expected.isdigit() and int(expected) != len(hosts):
        raise SlurmError(
            f"{nodelist!r} expands to {len(hosts)} hosts but ${NUM_NODES_ENV} is {expected}"
        )
    resolve = resolve or resolve_ipv4
    nodes = [SlurmNode(h, resolve(h)) for h in hosts]
    seen: dict[str, str] = {}
    for n in nodes:
        if ipaddress.ip_address(n.ip).is_loopback:
            raise SlurmError(
                f"{n.host} resolves to the loopback address {n.ip} (check /etc/hosts): the "
                "other nodes could not reach its servers"
            )
        if n.ip in seen:
            raise SlurmError(f"{seen[n.ip]} and {n.host} resolve to the same address {n.ip}")
        seen[n.ip] = n.host
    return nodes


def ip_config_text(nodes: Sequence[SlurmNode], port: int) -> str:
    """The ip_config DGL and ``rudder train --ip-config`` read: bare ``IP PORT`` lines.

    No comments naming the hosts: DGL's own reader does not skip them.
    """
    return "".join(f"{n.ip} {port}\n" for n in nodes)
