"""SshCluster against a fake ssh that runs the remote command here (no network involved)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest

from rudder.launcher.cluster import ProcessSpec, SshCluster, make_cluster, read_ip_config
from rudder.launcher.ssh import DEFAULT_SSH_CMD, MARKER_ENV
from rudder.launcher.supervisor import Supervisor

pytestmark = pytest.mark.integration

# Drops ssh's options and the host (recording it), then runs the remote command with sh -c,
# as sshd would hand it to the login shell.
FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p|-i|-l|-F|-J) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
echo "$1" >> {log}
shift
exec sh -c "$*"
"""


@pytest.fixture
def fake_ssh(tmp_path):
    script = tmp_path / "bin" / "ssh"
    script.parent.mkdir()
    script.write_text(FAKE_SSH.format(log=shlex.quote(str(tmp_path / "ssh-hosts.log"))))
    script.chmod(0o755)
    return script


@pytest.fixture
def ip_config(tmp_path):
    path = tmp_path / "ip_config.txt"
    # TEST-NET addresses: never contacted, the fake ssh only records them.
    path.write_text("# two machines\n192.0.2.10 30050\n\n192.0.2.11   30050  # second\n")
    return path


@pytest.fixture
def cluster(fake_ssh, ip_config):
    with SshCluster(ip_config, "pytest run 'quoted'", ssh_cmd=[str(fake_ssh), "-o", "X=y"]) as c:
        yield c


def hosts_contacted(tmp_path) -> list[str]:
    path = tmp_path / "ssh-hosts.log"
    return path.read_text().split() if path.exists() else []


def gone(p: psutil.Process, timeout_s: float = 5.0) -> bool:
    """Dead or a zombie (an orphan waits for init to reap it), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_ip_config_lines_are_ip_and_optional_port(tmp_path, ip_config):
    assert read_ip_config(ip_config) == [("192.0.2.10", 30050), ("192.0.2.11", 30050)]
    bare = tmp_path / "bare.txt"
    bare.write_text("10.1.0.1\n10.1.0.2\n")
    assert read_ip_config(bare) == [("10.1.0.1", None), ("10.1.0.2", None)]
    bad = tmp_path / "bad.txt"
    bad.write_text("10.1.0.1 30050 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'IP \[PORT\]'"):
        read_ip_config(bad)


def test_command_is_ssh_to_the_machine_host(ip_config):
    c = SshCluster(ip_config, "r1")
    spec = ProcessSpec("m1-trainer0", 1, ["python", "-m", "x"], {"A": "1"}, "trainer", cwd="/w")
    argv, env = c.command(spec)
    assert argv[: len(DEFAULT_SSH_CMD)] == list(DEFAULT_SSH_CMD) and env == {}
    assert argv[-2] == "192.0.2.11" and c.machine_ip(1) == "192.0.2.11"
    words = shlex.split(argv[-1])
    assert words[:4] == ["cd", "/w", "&&", "exec"]
    assert words[4:] == ["env", f"{MARKER_ENV}={c.marker}", "A=1", "python", "-m", "x"]
    assert c.local_cwd(spec) is None and c.interface(1) is None


def test_make_cluster_ssh_checks_its_arguments(ip_config):
    assert isinstance(make_cluster("ssh", 2, "r", None, str(ip_config)), SshCluster)
    with pytest.raises(ValueError, match="ip_config"):
        make_cluster("ssh", 2, "r")
    with pytest.raises(ValueError, match="lists 2 machines but 3"):
        make_cluster("ssh", 3, "r", None, str(ip_config))
    with pytest.raises(ValueError, match="bandwidth"):
        make_cluster("ssh", 2, "r", "1gbit", str(ip_config))
    with pytest.raises(ValueError, match="invalid environment variable names"):
        SshCluster(ip_config, "r").command(ProcessSpec("m0-x", 0, ["true"], {"A B": "1"}, "server"))


NASTY = 'it\'s a "test" with $HOME, `date`; echo pwned && exit 7\n| * ~ \\'
REPORT = "import json, os, sys; print(json.dumps([os.environ['NASTY'], sys.argv[1:], os.getcwd()]))"


def test_env_argv_and_cwd_survive_the_remote_shell(cluster, tmp_path):
    workdir = tmp_path / "work dir 'x'"
    workdir.mkdir()
    spec = ProcessSpec(
        "m1-trainer0",
        1,
        [sys.executable, "-c", REPORT, NASTY, "*"],
        {"NASTY": NASTY},
        "trainer",
        cwd=str(workdir),
    )
    with Supervisor(cluster, tmp_path / "logs", timeout_s=30, grace_s=1) as sup:
        sup.start(spec)
        report = sup.wait()
    assert report.ok, report.describe()
    assert json.loads(report.processes[0].log_tail) == [NASTY, [NASTY, "*"], str(workdir)]
    assert hosts_contacted(tmp_path)[0] == "192.0.2.11"


def test_failing_remote_command_is_reported(cluster, tmp_path):
    with Supervisor(cluster, tmp_path / "logs", timeout_s=30, grace_s=1) as sup:
        sup.start(
            ProcessSpec(
                "m0-server0",
                0,
                [sys.executable, "-c", "import time; time.sleep(600)"],
                {},
                "server",
            )
        )
        bad = sup.start(
            ProcessSpec(
                "m1-trainer0", 1, [sys.executable, "-c", "print('oops'); exit(3)"], {}, "trainer"
            )
        )
        report = sup.wait()
    assert not report.ok
    assert report.reason == f"m1-trainer0 (pid {bad}) died: exit code 3"
    assert report.failed()[0].log_tail == "oops\n"


def test_missing_remote_directory_is_reported(cluster, tmp_path):
    spec = ProcessSpec("m0-trainer0", 0, ["true"], {}, "trainer", cwd=str(tmp_path / "nowhere"))
    with Supervisor(cluster, tmp_path / "logs", timeout_s=30, grace_s=1) as sup:
        sup.start(spec)
        report = sup.wait()
    assert not report.ok and "exit code 2" in report.reason
    assert "nowhere" in report.processes[0].log_tail


DETACHING = """
import subprocess, sys
p = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    start_new_session=True,
    stdout=subprocess.DEVNULL,  # or ssh would wait for it to close our stdout and stderr
    stderr=subprocess.DEVNULL,
)
print(p.pid, flush=True)
"""


def test_close_kills_remote_leftovers_by_marker(cluster, tmp_path):
    """A remote worker leaves a detached child behind; close() finds it by its environment."""
    spec = ProcessSpec("m1-trainer0", 1, [sys.executable, "-c", DETACHING], {}, "trainer")
    argv, env = cluster.command(spec)
    out = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=10
    )
    leftover = psutil.Process(int(out.stdout))
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"]
    )  # not the run's
    try:
        assert leftover.is_running()
        cluster.close()
        assert gone(leftover)
        assert other.poll() is None  # no marker, untouched
        assert sorted(set(hosts_contacted(tmp_path))) == ["192.0.2.10", "192.0.2.11"]
    finally:
        other.kill()
        other.wait()
        if leftover.is_running():
            leftover.kill()


def test_signal_all_reaches_a_running_remote_process(cluster, tmp_path):
    spec = ProcessSpec(
        "m0-server0", 0, [sys.executable, "-c", "import time; time.sleep(600)"], {}, "server"
    )
    argv, env = cluster.command(spec)
    proc = subprocess.Popen(argv, env={**os.environ, **env})
    try:
        time.sleep(0.3)  # let the remote shell exec the worker
        cluster.signal_all(signal.SIGTERM)
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_check_hosts_reports_unreachable_ones(ip_config, tmp_path):
    good = tmp_path / "good-ssh"
    good.write_text("#!/bin/sh\nexit 0\n")
    bad = tmp_path / "bad-ssh"
    bad.write_text(
        '#!/bin/sh\necho "ssh: connect to host $1 port 22: Connection refused" >&2\nexit 255\n'
    )
    for f in (good, bad):
        f.chmod(0o755)
    assert SshCluster(ip_config, "r", ssh_cmd=[str(good)]).check_hosts() == []
    problems = SshCluster(ip_config, "r", ssh_cmd=[str(bad)]).check_hosts()
    assert problems == [
        f"{h}: ssh: connect to host {h} port 22: Connection refused"
        for h in ("192.0.2.10", "192.0.2.11")
    ]
