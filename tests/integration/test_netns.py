"""Emulated machines: real namespaces, sockets, tmpfs mounts and tbf shaping (needs root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from rudder.launcher.cluster import (
    ClusterError,
    EmulatedCluster,
    LocalCluster,
    ProcessSpec,
    cleanup_stale,
    make_cluster,
    write_ip_config,
)
from rudder.launcher.netns import STATE_DIR, run_tag
from rudder.launcher.nettools import NETNS_DIR, parse_rate, tbf_burst_bytes
from rudder.launcher.supervisor import Supervisor

pytestmark = pytest.mark.integration

PREFIX = "rudtest"  # not "rudder": the tests never touch a real run's namespaces
AVAILABLE, WHY = EmulatedCluster.available()
needs_netns = pytest.mark.skipif(not AVAILABLE, reason=f"cannot emulate machines: {WHY}")


def emulated(num_machines: int = 2, bandwidth: str | None = None, run: str = "") -> EmulatedCluster:
    run_id = f"pytest-{os.getpid()}-{run}-{time.monotonic_ns()}"
    return EmulatedCluster(num_machines, run_id, bandwidth=bandwidth, prefix=PREFIX)


@pytest.fixture(scope="module")
def cluster():
    if not AVAILABLE:
        pytest.skip(f"cannot emulate machines: {WHY}")
    with emulated(run="shared") as c:
        yield c


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_on(cluster, machine: int, code: str, *args: str, timeout_s: float = 30) -> str:
    """Run Python code on an emulated machine; its stdout."""
    spec = ProcessSpec(f"m{machine}-probe", machine, [*py(code), *args], {}, "trainer")
    argv, env = cluster.command(spec)
    out = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def netns_of(cluster) -> list[str]:
    return [n for n in os.listdir(NETNS_DIR) if n.startswith(f"{PREFIX}-{cluster.names.tag}-")]


def leftovers(tag: str) -> list[str]:
    """Anything of the run tagged ``tag``: namespaces, holder processes, its state file."""
    found = [n for n in os.listdir(NETNS_DIR) if n.startswith(f"{PREFIX}-{tag}-")]
    marker = f"{PREFIX}-holder-{tag}-"
    for p in psutil.process_iter(["cmdline"]):
        if any(a.startswith(marker) for a in p.info["cmdline"] or ()):
            found.append(f"holder {p.pid}")
    if (STATE_DIR / f"{PREFIX}-{tag}.json").exists():
        found.append("state file")
    return found


def wait_until_inside(pid: int, netns: str, timeout_s: float = 10.0) -> None:
    """Until nsenter has moved ``pid`` into the namespace (it starts out in ours)."""
    target = os.stat(NETNS_DIR / netns).st_ino
    deadline = time.monotonic() + timeout_s
    while os.stat(f"/proc/{pid}/ns/net").st_ino != target:
        assert time.monotonic() < deadline, f"pid {pid} never entered {netns}"
        time.sleep(0.01)


# -- plumbing that needs no root ---------------------------------------------------------------


def test_rates_parse_like_tc():
    assert parse_rate("1gbit") == 10**9
    assert parse_rate("50mbit") == 50 * 10**6
    assert parse_rate("125MBps") == 10**9
    assert parse_rate("2.5gbit") == 2_500_000_000
    with pytest.raises(ValueError, match="tc unit"):
        parse_rate("1 gigabit")
    with pytest.raises(ValueError, match="tc unit"):
        parse_rate("fast")


def test_burst_holds_a_gso_packet_or_a_millisecond():
    assert tbf_burst_bytes(parse_rate("50mbit")) == 128 * 1024
    assert tbf_burst_bytes(parse_rate("1gbit")) == 128 * 1024
    assert tbf_burst_bytes(parse_rate("10gbit")) == 1_250_000


def test_make_cluster_checks_its_mode():
    with pytest.raises(ValueError, match="auto, netns, loopback, ssh"):
        make_cluster("docker", 2, "r")
    with pytest.raises(ValueError, match="netns"):
        make_cluster("loopback", 2, "r", bandwidth="1gbit")
    with make_cluster("loopback", 2, "r") as c:
        assert isinstance(c, LocalCluster) and c.machine_ip(1) == "127.0.0.1"


def test_ip_config_gives_machines_on_one_address_their_own_ports(tmp_path):
    path = write_ip_config(LocalCluster(3), tmp_path / "ip.txt", 30050, servers_per_machine=2)
    assert path.read_text() == "127.0.0.1 30050\n127.0.0.1 30052\n127.0.0.1 30054\n"


# -- emulated machines -------------------------------------------------------------------------

ECHO_SERVER = """
    import socket, sys
    s = socket.create_server((sys.argv[1], int(sys.argv[2])))
    conn, (peer, _) = s.accept()
    conn.sendall(f"hello {peer}: ".encode() + conn.recv(100))
"""
ECHO_CLIENT = """
    import socket, sys, time
    for _ in range(200):  # the server may not listen yet
        try:
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    c.sendall(b"ping")
    print(c.recv(100).decode())
    try:  # an address outside the subnet has no route: nothing leaves the machine
        socket.create_connection(("192.0.2.1", 9), timeout=2)
    except OSError as e:
        print("outside:", e.strerror)
"""


@needs_netns
def test_tcp_between_machines_under_the_supervisor(cluster, tmp_path):
    server_ip = cluster.machine_ip(0)
    with Supervisor(cluster, tmp_path, timeout_s=30, grace_s=2, poll_interval_s=0.05) as sup:
        sup.start(ProcessSpec("m0-server0", 0, [*py(ECHO_SERVER), server_ip, "5555"], {}, "server"))
        sup.start(
            ProcessSpec("m1-trainer0", 1, [*py(ECHO_CLIENT), server_ip, "5555"], {}, "trainer")
        )
        report = sup.wait()
    assert report.ok, report.describe()
    out = {p.name: p.log_tail for p in report.processes}
    assert out["m1-trainer0"].splitlines() == [
        f"hello {cluster.machine_ip(1)}: ping",
        "outside: Network is unreachable",
    ]
    assert all(not p.stopped_by_supervisor for p in report.processes)  # the server exited by itself


ADDRESSES = """
    import json, socket, psutil
    addrs = {
        name: [a.address for a in al if a.family in (socket.AF_INET, socket.AF_INET6)]
        for name, al in psutil.net_if_addrs().items()
    }
    with open("/proc/net/route") as f:
        routes = [line.split()[1] for line in f.readlines()[1:]]
    print(json.dumps({"addrs": addrs, "routes": routes}))
"""


@needs_netns
def test_each_machine_sees_only_its_own_address(cluster):
    for m in range(cluster.num_machines):
        seen = json.loads(run_on(cluster, m, ADDRESSES))
        # What dgl's machine-id detection relies on: exactly one ip_config address is local.
        assert seen["addrs"] == {"lo": ["127.0.0.1"], "eth0": [cluster.machine_ip(m)]}
        assert seen["routes"] == ["000012C6"]  # 198.18.0.0 (little-endian hex), no default
        assert cluster.interface(m) == "eth0"


@needs_netns
def test_ip_config_lists_each_machine_at_its_address(cluster, tmp_path):
    path = write_ip_config(cluster, tmp_path / "ip.txt", 30050)
    assert path.read_text() == "198.18.0.1 30050\n198.18.0.2 30050\n"


SHM = """
    import os, sys
    if sys.argv[1] == "write":
        with open("/dev/shm/rudder-test-features", "w") as f:
            f.write(sys.argv[2])
    print(sorted(os.listdir("/dev/shm")))
    if os.path.exists("/dev/shm/rudder-test-features"):
        print(open("/dev/shm/rudder-test-features").read())
"""


@needs_netns
def test_dev_shm_is_shared_within_a_machine_and_private_to_it(cluster, tmp_path):
    host_file = "/dev/shm/rudder-test-host-only"
    with open(host_file, "w") as f:
        f.write("host")
    try:
        # Both machines create the same name, as two DistDGL servers would.
        assert (
            run_on(cluster, 0, SHM, "write", "machine 0") == "['rudder-test-features']\nmachine 0\n"
        )
        assert (
            run_on(cluster, 1, SHM, "write", "machine 1") == "['rudder-test-features']\nmachine 1\n"
        )
        # A second process of machine 0 maps what its first one wrote.
        assert run_on(cluster, 0, SHM, "read") == "['rudder-test-features']\nmachine 0\n"
        assert not os.path.exists("/dev/shm/rudder-test-features")  # nothing on the host
    finally:
        os.unlink(host_file)
        for m in range(cluster.num_machines):
            run_on(cluster, m, "import os; os.unlink('/dev/shm/rudder-test-features')")


SINK = """
    import socket, sys, time
    s = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    conn, _ = s.accept()
    t0, got = time.monotonic(), 0
    while b := conn.recv(1 << 20):
        got += len(b)
    print(got, time.monotonic() - t0, flush=True)
"""
SOURCE = """
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    c.sendall(b"x" * int(sys.argv[3]))
    c.close()
"""


def transfer_s(cluster, src: int, dst: int, nbytes: int) -> float:
    """Seconds for ``nbytes`` over TCP from machine ``src`` to ``dst``, at the receiver."""
    ip, port = cluster.machine_ip(dst), "5601"
    sink_argv, _ = cluster.command(ProcessSpec("sink", dst, [*py(SINK), ip, port], {}, "server"))
    with subprocess.Popen(sink_argv, stdout=subprocess.PIPE, text=True) as sink:
        try:
            assert sink.stdout.readline() == "listening\n"
            run_on(cluster, src, SOURCE, ip, port, str(nbytes))
            got, seconds = sink.stdout.readline().split()
        finally:
            sink.kill()
    assert int(got) == nbytes
    return float(seconds)


@needs_netns
def test_bandwidth_is_shaped_in_both_directions(cluster):
    nbytes = 6_000_000  # 0.96 s at 50 Mbit/s
    unshaped = transfer_s(cluster, 1, 0, nbytes)
    with emulated(bandwidth="50mbit", run="shaped") as shaped:
        qdisc = subprocess.run(
            ["tc", "-n", shaped.netns(1), "qdisc", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "tbf" in qdisc and "rate 50Mbit" in qdisc
        forth = transfer_s(shaped, 1, 0, nbytes)
        back = transfer_s(shaped, 0, 1, nbytes)
    assert forth >= 0.8 and back >= 0.8, (forth, back)
    assert forth < 3 and back < 3, (forth, back)  # shaped, not stalled
    assert unshaped < forth / 3, (unshaped, forth)


@needs_netns
def test_close_leaves_nothing_behind():
    c = emulated(bandwidth="1gbit", run="close")
    argv, _ = c.command(
        ProcessSpec("m1-sleeper", 1, py("import time; time.sleep(600)"), {}, "server")
    )
    sleeper = subprocess.Popen(argv, start_new_session=True)
    try:
        wait_until_inside(sleeper.pid, c.netns(1))
        assert len(leftovers(c.names.tag)) == 3 + 2 + 1
        c.close()
        assert sleeper.wait(timeout=5) == -signal.SIGKILL  # what ran in a machine dies with it
        assert leftovers(c.names.tag) == []
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert c.names.tag not in links and "rudtest" not in links
        c.close()  # idempotent
        with pytest.raises(ClusterError, match="closed"):
            c.command(ProcessSpec("m0-late", 0, ["true"], {}, "server"))
    finally:
        sleeper.kill()
        c.close()


@needs_netns
def test_failed_set_up_undoes_the_steps_before(tmp_path, monkeypatch):
    fake_tc = tmp_path / "tc"
    fake_tc.write_text("#!/bin/sh\necho 'fake tc: no qdisc for you' >&2\nexit 2\n")
    fake_tc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    run_id = f"pytest-broken-{os.getpid()}-{time.monotonic_ns()}"
    # Fails after the hub, the bridge, machine 0's namespace, holder and veth exist.
    with pytest.raises(ClusterError, match=r"shaping machine 0's link.*fake tc: no qdisc"):
        EmulatedCluster(2, run_id, bandwidth="1gbit", prefix=PREFIX)
    assert leftovers(run_tag(run_id)) == []


CRASHING_LAUNCHER = """
    import os, subprocess, sys, time
    from rudder.launcher.cluster import EmulatedCluster, ProcessSpec
    c = EmulatedCluster(2, sys.argv[1], prefix="rudtest")
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    argv, _ = c.command(ProcessSpec("m1-t", 1, sleep, {}, "trainer"))
    worker = subprocess.Popen(argv, start_new_session=True)
    inside = os.stat(f"/run/netns/{c.netns(1)}").st_ino
    while os.stat(f"/proc/{worker.pid}/ns/net").st_ino != inside:  # until nsenter is done
        time.sleep(0.01)
    print(c.names.tag, worker.pid, flush=True)
    time.sleep(600)
"""


@needs_netns
def test_cleanup_stale_removes_a_crashed_run_and_spares_live_ones(cluster):
    launcher = subprocess.Popen(
        [*py(CRASHING_LAUNCHER), f"pytest-crash-{os.getpid()}"], stdout=subprocess.PIPE, text=True
    )
    try:
        tag, worker = launcher.stdout.readline().split()
        launcher.send_signal(signal.SIGKILL)  # no atexit, no close(): a crash
        launcher.wait()
        stale = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{PREFIX}-{tag}-"))
        assert len(stale) == 3 and psutil.pid_exists(int(worker))

        removed = cleanup_stale(PREFIX)

        assert {f"netns {n}" for n in stale} <= set(removed)
        assert f"state file {STATE_DIR / f'{PREFIX}-{tag}.json'}" in removed
        assert leftovers(tag) == []
        assert (
            not psutil.pid_exists(int(worker)) or psutil.Process(int(worker)).status() == "zombie"
        )
        assert len(netns_of(cluster)) == 3  # the live run (this module's cluster) is untouched
        assert run_on(cluster, 0, "print('alive')") == "alive\n"
    finally:
        launcher.kill()
        cleanup_stale(PREFIX)
