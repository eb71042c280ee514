"""The sidecar's listening socket: claiming the endpoint, binding the ROUTER, cleaning up.

It exists apart from ``server.py`` because the socket file has a life of its own: an ``ipc://``
path may be left by a killed agent (removed) or held by a live one (refused), it must be
owner-only once bound (the protocol has no authentication), and it goes when the agent stops.
The socket options that bound what a peer can send are set here too, in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

import zmq

from rudder.protocol import MAX_MESSAGE_BYTES, ipc_path, private_dir

log = logging.getLogger(__name__)


def bind_router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A ROUTER socket of ``ctx`` bound on ``endpoint``; ValueError (``ctx`` ended) if not."""
    path = ipc_path(endpoint)
    if path is not None:
        claim_ipc_path(path)
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # the transport drops monsters
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable reply raises: we count it
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.RCVHWM, 1000)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(linger=0)
        ctx.term()
        raise ValueError(f"cannot bind the agent on {endpoint}: {e}") from None
    if path is not None:
        os.chmod(path, 0o600)  # the protocol has no authentication: only this user connects
    return sock


def claim_ipc_path(path: Path) -> None:
    """Make ``path`` bindable: refuse if a live agent listens there, remove a stale file."""
    if not path.parent.exists():  # one we make is private; an existing one passed check_ipc_path
        private_dir(path.parent)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left by an agent that was killed
        log.info("agent: removed the stale socket file %s", path)
        return
    except OSError as e:
        raise ValueError(f"{path} exists and is not a socket an agent can use: {e}") from None
    finally:
        probe.close()
    raise ValueError(f"ipc://{path} is in use by a running agent; stop it or use another endpoint")


def remove_ipc_file(endpoint: str) -> None:
    """Remove the socket file of an ``ipc://`` endpoint (nothing for tcp, or if it is gone)."""
    path = ipc_path(endpoint)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
