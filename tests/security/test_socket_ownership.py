"""Agent sockets another local user could pre-bind or swap: refused, with a clear message.

The probe: the old default ``/tmp/rudder-0-agent.sock`` could be bound first by any local
user (the sidecar then could not start) and clients did not check whose socket they reach.
Tests that hand a file to another user (uid 65534, "nobody") need root to ``chown``.
"""

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import rudder.protocol.endpoints
from rudder.protocol import (
    UnsafeEndpointError,
    check_endpoint,
    ipc_endpoint,
    ipc_path,
    private_dir,
    runtime_dir,
)
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig, ask

NOBODY = 65534
RUDDER_SERVE = [sys.executable, "-m", "rudder", "agent", "serve"]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temp directory standing in for /tmp, and no XDG_RUNTIME_DIR: the fallback path."""
    fake_tmp = tmp_path / "tmp"
    fake_tmp.mkdir(mode=0o1777)
    fake_tmp.chmod(0o1777)  # like /tmp: world-writable and sticky
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(fake_tmp))
    no_run = tmp_path / "no-run" / "rudder" / "agent"  # root's /run choice, absent here
    monkeypatch.setattr(rudder.protocol.endpoints, "ROOT_RUNTIME_DIR", no_run)
    return fake_tmp


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_socket_lives_in_a_private_0700_directory(private_tmp):
    endpoint = ipc_endpoint()
    path = ipc_path(endpoint)
    assert path.parent == private_tmp / f"rudder-{os.geteuid()}"
    assert _mode(path.parent) == 0o700 and os.lstat(path.parent).st_uid == os.geteuid()
    assert path.name == "agent.sock"


@as_root
def test_root_without_xdg_uses_run_where_no_one_else_can_write(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(rudder.protocol.endpoints, "ROOT_RUNTIME_DIR", run / "rudder" / "agent")
    assert ipc_path(ipc_endpoint()) == run / "rudder" / "agent" / "agent.sock"
    assert _mode(run / "rudder" / "agent") == 0o700


def test_xdg_runtime_dir_is_preferred(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_dir() == xdg / "rudder" and _mode(xdg / "rudder") == 0o700
    long_dir = tmp_path / ("d" * 120)  # too long for a socket path: a hashed name in it
    assert ipc_path(ipc_endpoint(long_dir, "m0")).parent == xdg / "rudder"


def test_a_loose_directory_of_ours_is_tightened(private_tmp):
    d = private_tmp / "mine"
    d.mkdir()
    d.chmod(0o777)
    assert private_dir(d) == d and _mode(d) == 0o700


def test_a_symlinked_runtime_directory_is_refused(private_tmp, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (private_tmp / f"rudder-{os.geteuid()}").symlink_to(target)
    with pytest.raises(UnsafeEndpointError, match="not a plain directory"):
        ipc_endpoint()


@as_root
def test_a_runtime_directory_planted_by_another_user_is_refused(private_tmp):
    planted = private_tmp / f"rudder-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(UnsafeEndpointError, match=r"belongs to uid 65534 .*refusing to use it"):
        ipc_endpoint()


def test_a_socket_in_a_world_writable_directory_is_refused(private_tmp):
    # /tmp/NAME.sock (the old default's shape): anyone could bind it first or swap it.
    with pytest.raises(UnsafeEndpointError, match="writable by other users"):
        check_endpoint(f"ipc://{private_tmp}/rudder-0-agent.sock")
    with pytest.raises(ValueError, match="writable by other users"):
        ClientConfig(endpoint=f"ipc://{private_tmp}/agent.sock", trainer=0)


@pytest.fixture
def world_dir():
    """A world-writable sticky directory another user can reach (pytest's tmp is 0700)."""
    d = tempfile.mkdtemp(prefix="rudder-test-", dir="/tmp")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _nobody_listens(path) -> subprocess.Popen:
    """Another local user (uid 65534) binding a unix socket at ``path``, as in the probe."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
        "print('bound', flush=True); time.sleep(60)\n"
    )
    argv = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    proc = subprocess.Popen(
        [*argv, sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "bound"
    return proc


@as_root
def test_a_socket_bound_by_another_user_is_refused_by_server_client_and_tools(tmp_path, world_dir):
    d = private_dir(tmp_path / "agent")
    proc = _nobody_listens(f"{world_dir}/agent.sock")
    try:
        os.rename(f"{world_dir}/agent.sock", d / "agent.sock")  # into a directory we own
        endpoint = f"ipc://{d}/agent.sock"
        assert os.lstat(d / "agent.sock").st_uid == NOBODY
        with pytest.raises(UnsafeEndpointError, match=r"belongs to uid 65534 \(nobody\)"):
            check_endpoint(endpoint)
        with pytest.raises(ValueError, match="belongs to uid 65534"):
            AgentClient(ClientConfig(endpoint=endpoint, trainer=0))
        with pytest.raises(ValueError, match="belongs to uid 65534"):
            ask(endpoint, None, timeout_s=0.1)
        t0 = time.monotonic()
        out = subprocess.run(
            [*RUDDER_SERVE, "--bind", endpoint, "--decider", "never"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert "belongs to uid 65534 (nobody), not to you" in out.stderr
        assert "Traceback" not in out.stderr
        assert time.monotonic() - t0 < 30
    finally:
        proc.kill()
        proc.wait()


@as_root
def test_a_socket_path_swapped_through_a_foreign_directory_is_refused(tmp_path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(UnsafeEndpointError, match=r"directory .*theirs belongs to uid 65534"):
        check_endpoint(f"ipc://{foreign}/sub/agent.sock")


def test_a_symlink_at_the_socket_path_is_refused(tmp_path):
    d = private_dir(tmp_path / "agent")
    target = tmp_path / "real.sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(target))
        (d / "agent.sock").symlink_to(target)
        with pytest.raises(UnsafeEndpointError, match="symbolic link"):
            check_endpoint(f"ipc://{d}/agent.sock")
    finally:
        s.close()


def test_the_directory_a_bind_creates_is_private_and_the_socket_owner_only(tmp_path):
    import zmq

    from rudder.controller.router_socket import bind_router

    path = tmp_path / "made-by-bind" / "agent.sock"
    ctx = zmq.Context()
    sock = bind_router(ctx, f"ipc://{path}")
    try:
        assert _mode(path.parent) == 0o700 and _mode(path) == 0o600
    finally:
        sock.close(linger=0)
        ctx.term()
