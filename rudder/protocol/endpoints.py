"""Where the agent listens: ``ipc://`` and ``tcp://`` endpoints, checked before bind/connect."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from pathlib import Path

IPC_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with the terminating NUL)
_LOOPBACK_NAMES = ("localhost",)


def endpoint_scheme(endpoint: str) -> str:
    """``ipc`` or ``tcp``; ValueError for anything else."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp") or not rest:
        raise ValueError(
            f"endpoint {endpoint!r}: expected ipc:///path/to/agent.sock or tcp://127.0.0.1:PORT"
        )
    return scheme


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint (None for tcp)."""
    return Path(endpoint[len("ipc://") :]) if endpoint_scheme(endpoint) == "ipc" else None


def check_endpoint(endpoint: str, *, allow_remote: bool = False) -> str:
    """Validate an endpoint to bind or connect; returns it unchanged.

    ``ipc://PATH`` with PATH at most 107 bytes, or ``tcp://HOST:PORT``. HOST must be a
    loopback address unless ``allow_remote``: the protocol has no authentication, so an agent
    listening on a network interface would take decisions (and stats requests) from anyone.
    """
    if endpoint_scheme(endpoint) == "ipc":
        path = endpoint[len("ipc://") :]
        if len(path.encode()) > IPC_PATH_MAX:
            raise ValueError(
                f"endpoint {endpoint!r}: unix socket paths are limited to {IPC_PATH_MAX} bytes, "
                f"this one has {len(path.encode())}; use a shorter directory (see ipc_endpoint)"
            )
        return endpoint
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT with a port 1..65535")
    host = host.strip("[]")
    if not allow_remote and not _is_loopback(host):
        raise ValueError(
            f"endpoint {endpoint!r} is not on loopback: the agent protocol has no "
            "authentication; use tcp://127.0.0.1:PORT or ipc://, or allow remote explicitly "
            "(--allow-remote)"
        )
    return endpoint


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: not provably loopback


def ipc_endpoint(directory: str | Path | None = None, name: str = "agent") -> str:
    """An ``ipc://`` endpoint for ``name``: ``DIRECTORY/NAME.sock`` if that path is short enough.

    Otherwise (or without a directory) a per-user path under ``$XDG_RUNTIME_DIR`` or the temp
    directory, named after a hash of the directory so runs do not collide. Never /dev/shm:
    emulated machines mount a private /dev/shm, so a socket there is invisible to the others.
    """
    if directory is not None:
        path = Path(directory).resolve() / f"{name}.sock"
        if len(str(path).encode()) <= IPC_PATH_MAX:
            return f"ipc://{path}"
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:8] if directory is not None else ""
    fname = f"rudder-{os.getuid()}{'-' + tag if tag else ''}-{name}.sock"
    path = base / fname
    if len(str(path).encode()) > IPC_PATH_MAX:
        path = Path("/tmp") / fname
    return check_endpoint(f"ipc://{path}")
