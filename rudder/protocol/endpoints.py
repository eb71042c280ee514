"""Where the agent listens: ``ipc://`` and ``tcp://`` endpoints, checked before bind/connect.

The protocol has no authentication, so whoever can reach an endpoint can take decisions,
read statistics, or (binding first) answer in the agent's place. An ``ipc://`` socket is
therefore only used in a directory no other user can write to, and refused if another user
owns the socket file or a directory on its path (:func:`check_ipc_path`). Default sockets go
in a private per-user directory created mode 0700 (:func:`runtime_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

IPC_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with the terminating NUL)
_LOOPBACK_NAMES = ("localhost",)
_PRIVATE_MODE = 0o700
# root's sockets, without XDG_RUNTIME_DIR: under /run, which only root can write to
ROOT_RUNTIME_DIR = Path("/run/rudder/agent")


class UnsafeEndpointError(ValueError):
    """An ``ipc://`` path another local user controls (owns it, or can replace it)."""


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

    ``ipc://PATH`` with PATH at most 107 bytes and safe from other users
    (:func:`check_ipc_path`), or ``tcp://HOST:PORT``. HOST must be a loopback address unless
    ``allow_remote``: the protocol has no authentication, so an agent listening on a network
    interface would take decisions (and stats requests) from anyone.
    """
    if endpoint_scheme(endpoint) == "ipc":
        path = endpoint[len("ipc://") :]
        if len(path.encode()) > IPC_PATH_MAX:
            raise ValueError(
                f"endpoint {endpoint!r}: unix socket paths are limited to {IPC_PATH_MAX} bytes, "
                f"this one has {len(path.encode())}; use a shorter directory (see ipc_endpoint)"
            )
        check_ipc_path(Path(path))
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


def _trusted(uid: int) -> bool:
    """Whether ``uid`` is this process's user, or root (who can do anything anyway)."""
    return uid in (os.geteuid(), 0)


def _who(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def check_ipc_path(path: Path) -> None:
    """Refuse a socket path that another local user owns or could swap: UnsafeEndpointError.

    The socket file, if it exists, must be a socket (not a symlink) owned by this user or
    root. Its directory must be owned by this user or root and writable by no one else (so
    nobody can bind the path first, or replace the socket between check and connect); every
    directory above it must be owned by this user or root and, if others can write to it,
    sticky (like /tmp: nobody can rename our entries away). A missing directory is fine (the
    sidecar creates it) unless it would go in one that others can write to.
    """
    path = Path(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeEndpointError(
                f"ipc://{path} is a symbolic link; refusing to follow it to a socket that "
                "could belong to anyone (remove it, or use another --bind)"
            )
        if not _trusted(st.st_uid):
            raise UnsafeEndpointError(
                f"ipc://{path} belongs to {_who(st.st_uid)}, not to you ({_who(os.geteuid())}): "
                "another local user may be listening there in the agent's place; refusing to "
                "use it (remove it as that user or root, or use another path)"
            )
    parent = path.parent
    missing: Path | None = None  # the topmost directory still to be created
    for i, d in enumerate([parent, *parent.parents]):
        try:
            st = os.stat(d)  # symlinked directories (/var/run -> /run) are checked where they lead
        except FileNotFoundError:
            missing = d
            continue
        writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if missing is not None and writable_by_others:
            raise UnsafeEndpointError(
                f"ipc://{path}: {missing} does not exist and {d} is writable by other users, "
                "who could create it first; create it yourself (mode 0700) or use the default "
                f"{_default_base()}"
            )
        missing = None
        if not _trusted(st.st_uid):
            raise UnsafeEndpointError(
                f"ipc://{path}: directory {d} belongs to {_who(st.st_uid)}, not to you "
                f"({_who(os.geteuid())}), who could replace the socket; refusing to use it "
                f"(use a directory of your own, e.g. the default {_default_base()})"
            )
        if writable_by_others and (i == 0 or not st.st_mode & stat.S_ISVTX):
            raise UnsafeEndpointError(
                f"ipc://{path}: directory {d} is writable by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), who could bind the path first or replace "
                f"the socket; use a private directory (e.g. the default {_default_base()})"
            )


def _default_base() -> Path:
    """Where :func:`runtime_dir` puts the private directory (not created here)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "rudder"
    if os.geteuid() == 0 and ROOT_RUNTIME_DIR.parent.parent.is_dir():
        # /run is root's alone: nobody can plant the directory first, as they can in /tmp.
        return ROOT_RUNTIME_DIR
    return Path(tempfile.gettempdir()) / f"rudder-{os.geteuid()}"


def private_dir(path: str | Path) -> Path:
    """Create ``path`` mode 0700 (or verify it): a directory of ours, not a symlink, 0700.

    An existing directory of ours with a looser mode is tightened (logged); one that is a
    symlink or belongs to another user is refused with UnsafeEndpointError (another user
    who made it could read or replace what goes in it).
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, _PRIVATE_MODE)  # the umask can only take bits away
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeEndpointError(
            f"{path} is not a plain directory (a symlink or a file); refusing to keep sockets "
            "there (remove it, or set XDG_RUNTIME_DIR to a private directory)"
        )
    if st.st_uid != os.geteuid():
        raise UnsafeEndpointError(
            f"{path} belongs to {_who(st.st_uid)}, not to you ({_who(os.geteuid())}): another "
            "local user created it, perhaps to intercept the agent's socket; refusing to use "
            "it (remove it as that user or root, or set XDG_RUNTIME_DIR to a private directory)"
        )
    if stat.S_IMODE(st.st_mode) != _PRIVATE_MODE:
        log.warning(
            "%s had mode %04o; set to 0700 (agent sockets are private)",
            path,
            stat.S_IMODE(st.st_mode),
        )
        os.chmod(path, _PRIVATE_MODE)
    return path


def runtime_dir() -> Path:
    """The private directory for this user's agent sockets, created mode 0700 if needed.

    ``$XDG_RUNTIME_DIR/rudder`` where systemd provides that (a per-user tmpfs); else, for
    root, ``/run/rudder/agent``; else ``/tmp/rudder-<uid>``. Verified every time: a
    directory another user planted there is an error, never used.
    """
    return private_dir(_default_base())


def ipc_endpoint(directory: str | Path | None = None, name: str = "agent") -> str:
    """An ``ipc://`` endpoint for ``name``: ``DIRECTORY/NAME.sock`` if that path is short enough.

    Otherwise (or without a directory) ``NAME.sock`` in :func:`runtime_dir`, prefixed with a
    hash of the directory so runs do not collide. Never /dev/shm: emulated machines mount a
    private /dev/shm, so a socket there is invisible to the others.
    """
    if directory is not None:
        path = Path(directory).resolve() / f"{name}.sock"
        if len(str(path).encode()) <= IPC_PATH_MAX:
            return check_endpoint(f"ipc://{path}")
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:8] if directory is not None else ""
    path = runtime_dir() / f"{tag + '-' if tag else ''}{name}.sock"
    return check_endpoint(f"ipc://{path}")
