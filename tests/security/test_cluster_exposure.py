"""The emulated cluster's addresses are not reachable by other users of the host.

DistDGL's RPC unpickles what it receives, so whoever can connect to a server (or to a
trainer's receiver) can run code as the worker. In ``netns`` mode the machines' addresses
exist only inside the run's namespaces: this checks, with real connection attempts, that an
unprivileged local user (uid 65534) can neither connect to them nor enter the namespaces,
while another machine of the run can.
"""

import os
import subprocess
import sys

import pytest

from rudder.launcher.cluster import ProcessSpec
from rudder.launcher.netns import EmulatedCluster

pytestmark = pytest.mark.integration

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
PORT = 30571

LISTEN = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))  # all interfaces, like a DistDGL client's receiver
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"rudder-listener")
    c.close()
"""

# "reached" only if the listener itself answered: a connect alone proves nothing (a host's
# egress may accept any TCP connection, as this sandbox's does for every address off-host).
CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0) as c:
        c.settimeout(1.0)
        got = c.recv(15)
        print("reached" if got == b"rudder-listener" else f"not reached: answered {got!r}")
except OSError as e:
    print("not reached:", type(e).__name__, e)
"""


def _available() -> tuple[bool, str]:
    return EmulatedCluster.available() if os.geteuid() == 0 else (False, "needs root")


@pytest.fixture(scope="module")
def listening_cluster():
    ok, why = _available()
    if not ok:
        pytest.skip(f"emulated cluster unavailable: {why}")
    with EmulatedCluster(2, f"exposure-{os.getpid()}") as cluster:
        spec = ProcessSpec("m0-listen", 0, [sys.executable, "-c", LISTEN], {}, "server")
        argv, env = cluster.command(spec)
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            yield cluster, proc
        finally:
            proc.kill()
            proc.wait()


def _connect(prefix: list[str], ip: str) -> str:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT, ip, str(PORT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip() or out.stderr.strip()


def test_another_machine_of_the_run_reaches_the_listener(listening_cluster):
    cluster, _ = listening_cluster
    spec = ProcessSpec("m1-probe", 1, [sys.executable, "-c", CONNECT], {}, "trainer")
    argv, _ = cluster.command(spec)
    out = subprocess.run(
        [*argv, cluster.machine_ip(0), str(PORT)], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "reached"  # the checks below are not vacuous


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_the_host_cannot_connect_to_a_machine_address(listening_cluster, who):
    cluster, _ = listening_cluster
    for ip in (cluster.machine_ip(0), "127.0.0.1"):  # the machine's lo is its own, too
        result = _connect(NOBODY if who == "nobody" else [], ip)
        assert result.startswith("not reached"), f"{who} -> {ip}:{PORT}: {result}"


def test_an_unprivileged_user_cannot_enter_the_machines(listening_cluster):
    cluster, listener = listening_cluster
    attempts = [
        ["nsenter", f"--net=/run/netns/{cluster.netns(0)}", "true"],
        ["nsenter", f"--target={listener.pid}", "--net", "true"],
        ["ip", "netns", "exec", cluster.netns(0), "true"],
    ]
    for argv in attempts:
        out = subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, f"nobody ran {argv}"
        assert "ermission denied" in out.stderr or "not permitted" in out.stderr, out.stderr
