"""``rudder train --cluster ssh`` over real OpenSSH: two emulated hosts, each running sshd.

Three network namespaces of an :class:`EmulatedCluster` stand in for a real cluster: machines
0 and 1 are the hosts (each with its own sshd, host key and loopback), machine 2 is the
launching host, where ``rudder train`` runs and reaches the others only through ssh, with a
key made here. The file system is shared, as on a cluster with a shared home. Needs root,
iproute2 and Debian's openssh-server (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from rudder.launcher.cluster import ProcessSpec
from rudder.launcher.netns import EmulatedCluster
from rudder.launcher.nettools import pids_in_netns
from rudder.launcher.ssh import MARKER_ENV
from tests.integration.training_support import (
    make_parts,
    netns_names,
    rudder,
    run_processes,
    sigint_as_at_a_terminal,
    wait_for_text,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SSHD = "/usr/sbin/sshd"
MODEL = "smollm2-135m"
HOSTS = 2
LAUNCHER = HOSTS  # the machine index rudder train runs in

SSHD_CONFIG = """\
ListenAddress {ip}
Port 22
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
LogLevel ERROR
"""

SSH_CONFIG = """\
Host *
  User {user}
  IdentityFile {dir}/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {dir}/known_hosts
  StrictHostKeyChecking accept-new
  ConnectTimeout 5
  LogLevel ERROR
"""


@dataclass
class Hosts:
    cluster: EmulatedCluster
    ip_config: Path
    ssh_config: Path
    sshd: list[subprocess.Popen]

    def launch(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` on the launching host (its own namespace: it reaches hosts by ssh)."""
        spec = ProcessSpec("launcher", LAUNCHER, argv, {}, "trainer", cwd=os.getcwd())
        cmd, env = self.cluster.command(spec)
        return subprocess.Popen(cmd, env={**os.environ, **env}, text=True, **kw)

    def run_processes_on(self, machine: int) -> list[int]:
        """Pids on ``machine`` that a run started over ssh (they carry its marker)."""
        found = []
        for pid in pids_in_netns(self.cluster.netns(machine)):
            try:
                if MARKER_ENV in psutil.Process(pid).environ():
                    found.append(pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found


def _skip_unless_possible() -> None:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH (apt-get install openssh-server)")
    ok, why = EmulatedCluster.available()
    if not ok:
        pytest.skip(f"needs network namespaces: {why}")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    _skip_unless_possible()
    d = tmp_path_factory.mktemp("ssh")
    d.chmod(0o700)
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run([*keygen, "-f", d / "id_ed25519"], check=True)
    subprocess.run([*keygen, "-f", d / "host_key"], check=True)
    shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
    (d / "authorized_keys").chmod(0o600)
    (d / "ssh_config").write_text(SSH_CONFIG.format(user=psutil.Process().username(), dir=d))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    shm_before, netns_before = set(os.listdir("/dev/shm")), netns_names()
    cluster = EmulatedCluster(HOSTS + 1, f"ssh-{secrets.token_hex(3)}")
    sshd: list[subprocess.Popen] = []
    try:
        for m in range(HOSTS):
            conf = d / f"sshd_config.m{m}"
            conf.write_text(SSHD_CONFIG.format(ip=cluster.machine_ip(m), dir=d))
            spec = ProcessSpec(f"sshd-m{m}", m, [SSHD, "-D", "-e", "-f", str(conf)], {}, "server")
            log = open(d / f"sshd.m{m}.log", "w")  # noqa: SIM115 (closed with the process)
            sshd.append(subprocess.Popen(cluster.command(spec)[0], stdout=log, stderr=log))
        ips = [cluster.machine_ip(m) for m in range(HOSTS)]
        (d / "ip_config.txt").write_text("".join(f"{ip} 30050\n" for ip in ips))
        h = Hosts(cluster, d / "ip_config.txt", d / "ssh_config", sshd)
        for ip in ips:  # sshd is up once a login runs `true`
            deadline = time.monotonic() + 20
            while True:
                p = h.launch(["ssh", "-F", str(h.ssh_config), ip, "true"], stderr=subprocess.PIPE)
                if p.wait(30) == 0:
                    break
                assert time.monotonic() < deadline, p.stderr.read()
                time.sleep(0.2)
        yield h
    finally:
        for p in sshd:
            p.terminate()
            p.wait(10)
        cluster.close()
    # What the module must leave: no sshd, no namespace, no /dev/shm segment.
    assert all(p.poll() is not None for p in sshd)
    assert netns_names() - netns_before == set()
    assert set(os.listdir("/dev/shm")) - shm_before == set()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return make_parts(tmp_path_factory.mktemp("graph"))


def _train(hosts: Hosts, parts: Path, out: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "rudder", "train", "--partitions", str(parts), "--out", str(out)]
    argv += ["--machines", "2", "--ip-config", str(hosts.ip_config)]
    argv += ["--ssh-config", str(hosts.ssh_config), "--policy", "rudder", "--agent", "sidecar"]
    argv += ["--timeout", "150", *extra]
    return argv


def _decisions(out: Path, machine: int) -> list[dict]:
    path = out / "logs" / f"agent-{machine}.decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _left_on_hosts(hosts: Hosts) -> dict[int, list[int]]:
    left = {m: hosts.run_processes_on(m) for m in range(HOSTS)}
    return {m: pids for m, pids in left.items() if pids}


def test_heuristic_sidecars_run_on_each_host_over_ssh(hosts, parts, tmp_path):
    out = tmp_path / "run"
    argv = _train(hosts, parts, out, "--decider", "heuristic", "--epochs", "2")
    argv += ["--batch-size", "100"]
    p = hosts.launch(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = p.communicate(timeout=170)
    assert p.returncode == 0, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["cluster_mode"] == "SshCluster"
    assert set(summary["agent"]) == {"0", "1"}  # one trainer per host, each with its sidecar
    assert all(a["agent"]["decisions"] > 0 for a in summary["agent"].values())
    for m in range(HOSTS):  # each host's sidecar wrote its decisions into the shared run dir
        assert {d["trainer"] for d in _decisions(out, m)} == {m}
    assert summary["faults"]["sidecar_outages"] == 0
    assert _left_on_hosts(hosts) == {} and run_processes(out) == []


def test_llm_sidecars_start_a_model_server_on_each_host(hosts, parts, tmp_path):
    rudder("-q", "models", "fetch", MODEL, timeout=600)
    out = tmp_path / "run"
    argv = _train(hosts, parts, out, "--decider", "llm", "--llm-model", MODEL, "--epochs", "1")
    argv += ["--batch-size", "200", "--agent-mode", "sync", "--llm-url", "http://127.0.0.1:11522"]
    p = hosts.launch(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = p.communicate(timeout=170)
    (tmp_path / "launcher.log").write_text(stdout + stderr)  # what a user saw, for a failure
    assert p.returncode == 0, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"]
    agents = {t: a["agent"] for t, a in summary["agent"].items()}
    assert set(agents) == {"0", "1"} and all(a["decisions"] > 0 for a in agents.values())
    for m in range(HOSTS):  # a server per host, on that host's own loopback
        assert (out / "logs" / f"llm-server-m{m}.log").stat().st_size > 0
        assert {d["trainer"] for d in _decisions(out, m)} == {m}
    assert _left_on_hosts(hosts) == {} and run_processes(out) == []


def test_a_missing_model_on_a_host_is_an_error_naming_it(hosts, parts, tmp_path):
    out = tmp_path / "run"
    argv = _train(hosts, parts, out, "--decider", "classifier:/nonexistent/model.pkl")
    p = hosts.launch(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode != 0
    for m in range(HOSTS):
        assert f"{hosts.cluster.machine_ip(m)}: no classifier model file" in stdout + stderr
    assert not (out / "logs" / "m0-trainer0.log").exists()  # checked before anything started


@contextlib.contextmanager
def _long_run(hosts: Hosts, parts: Path, out: Path, **popen) -> Iterator[subprocess.Popen]:
    """A heuristic run far from its end, once host 1's trainer is in its second epoch."""
    argv = _train(hosts, parts, out, "--decider", "heuristic", "--epochs", "500")
    argv += ["--batch-size", "100"]
    p = hosts.launch(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    try:
        wait_for_text(p, out / "logs" / "m1-trainer0.log", "epoch 2/", 120)
        yield p
    finally:
        if p.poll() is None:
            p.kill()


def test_a_host_killed_mid_run_is_reported_and_the_run_stops(hosts, parts, tmp_path):
    out = tmp_path / "run"
    with _long_run(hosts, parts, out) as p:
        for pid in hosts.run_processes_on(1):  # the host's every process of the run, at once
            os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        stdout, stderr = p.communicate(timeout=120)
        stopped_in = time.monotonic() - t0
    assert p.returncode == 1, stdout + stderr
    assert "m1-" in stdout and "training failed" in stdout
    assert stopped_in < 60
    assert json.loads((out / "summary.json").read_text())["ok"] is False
    assert _left_on_hosts(hosts) == {} and run_processes(out) == []


def test_ctrl_c_stops_every_host_and_leaves_nothing(hosts, parts, tmp_path):
    out = tmp_path / "run"
    with _long_run(hosts, parts, out, preexec_fn=sigint_as_at_a_terminal) as p:
        assert _left_on_hosts(hosts).keys() == {0, 1}  # trainers, servers and sidecars run
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stdout + stderr
    assert "rudder: interrupted" in stderr
    assert _left_on_hosts(hosts) == {} and run_processes(out) == []
