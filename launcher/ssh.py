"""Real clusters: one host per DGL ip_config line, processes started over ssh.

Each command becomes ``ssh [opts] HOST 'cd CWD && exec env RUDDER_RUN_MARKER=M K=V ... argv'``.
The marker travels in the remote process's environment, which every descendant inherits:
stopping the run signals every process on each host whose environment carries it. That is
what ``pkill -f MARKER`` is usually asked to do, but pkill matches command lines, and the
marker leaves the command line as soon as the remote shell execs the worker; children of the
worker (samplers) never had it, and ``pkill -f`` also matches the shell running the pkill.

As with DGL's own launch script, the hosts are assumed to share the file system layout of the
launcher (same Python path, same working directory) and to accept ssh without a password.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from rudder.launcher.cluster import ClusterError, ProcessSpec, _check_machine, read_ip_config

log = logging.getLogger(__name__)

DEFAULT_SSH_CMD = ("ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new")
MARKER_ENV = "RUDDER_RUN_MARKER"
PROCESS_ENV = "RUDDER_PROCESS"  # the launcher names each process in its environment
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SshCluster:
    """``ssh`` mode: machine ``i`` is line ``i`` of a DGL ip_config file (``IP [PORT]``).

    ``ssh_cmd`` is the ssh client and its options (the host and the remote command are
    appended); ``ssh_hosts`` overrides the name ssh connects to per machine (``user@host``,
    an alias), while ``machine_ip`` stays the ip_config address that DGL matches against.
    """

    def __init__(
        self,
        ip_config: str | Path,
        run_id: str,
        *,
        num_machines: int | None = None,
        ssh_cmd: Sequence[str] | None = None,
        ssh_hosts: Sequence[str] | None = None,
        control_timeout_s: float = 30.0,
    ):
        machines = read_ip_config(ip_config)
        if num_machines is not None and num_machines != len(machines):
            raise ValueError(
                f"{ip_config} lists {len(machines)} machines but {num_machines} were asked for"
            )
        if ssh_hosts is not None and len(ssh_hosts) != len(machines):
            raise ValueError(f"ssh_hosts has {len(ssh_hosts)} entries for {len(machines)} machines")
        if not run_id:
            raise ValueError("run_id must not be empty")
        self.num_machines = len(machines)
        self.ips = [ip for ip, _ in machines]
        self.ports = [port for _, port in machines]
        self.ssh_hosts = list(ssh_hosts) if ssh_hosts is not None else list(self.ips)
        self.ssh_cmd = list(ssh_cmd) if ssh_cmd is not None else list(DEFAULT_SSH_CMD)
        self.run_id = run_id
        # Safe in a shell word and an environment value whatever the run id holds.
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:40]
        self.marker = f"{safe}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"
        # The run's helpers (agent sidecars, role "agent") carry their own marker: stopping the
        # trainers and servers (signal_all) spares them; close() ends both.
        self.helper_marker = f"{self.marker}-helper"
        self.control_timeout_s = control_timeout_s
        self._closed = False

    def machine_ip(self, machine: int) -> str:
        _check_machine(self, machine)
        return self.ips[machine]

    def interface(self, machine: int) -> str | None:
        """Unknown from here; set GLOO_SOCKET_IFNAME per host if the default route is wrong."""
        _check_machine(self, machine)
        return None

    def remote_command(self, spec: ProcessSpec) -> str:
        """The shell command line ``command(spec)`` runs on the far host."""
        bad = [k for k in spec.env if not _ENV_NAME_RE.match(k)]
        if bad:
            raise ValueError(f"process {spec.name}: invalid environment variable names {bad}")
        cwd = spec.cwd or os.getcwd()
        marker = self.helper_marker if spec.role == "agent" else self.marker
        assigns = [f"{MARKER_ENV}={marker}"] + [f"{k}={v}" for k, v in spec.env.items()]
        words = ["env", *assigns, *spec.argv]
        # `exec`: the worker replaces the remote shell, so ssh's exit status is the worker's.
        return f"cd {shlex.quote(cwd)} && exec {shlex.join(words)}"

    def command(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        _check_machine(self, spec.machine)
        if self._closed:
            raise ClusterError("the ssh cluster is closed")
        if spec.user is not None:  # the remote user is ssh's: user@host in ssh_hosts
            raise ClusterError(f"{spec.name}: with ssh, workers run as the user ssh logs in as")
        return [*self.ssh_cmd, self.ssh_hosts[spec.machine], self.remote_command(spec)], {}

    def local_cwd(self, spec: ProcessSpec) -> str | None:
        return None  # the remote command changes directory itself

    def kill_command(
        self, sig: int, process: str | None = None, markers: Sequence[str] | None = None
    ) -> str:
        """A POSIX sh line that sends ``sig`` to every process carrying one of ``markers``.

        ``markers`` defaults to the run's (not its helpers'). With ``process``, only those
        whose ``RUDDER_PROCESS`` is that name too (one sidecar). Needs GNU grep (``-z``) and
        /proc, i.e. Linux hosts.
        """
        name = signal.Signals(sig).name.removeprefix("SIG")
        needle = " ".join(
            f"-e {shlex.quote(f'{MARKER_ENV}={m}')}" for m in (markers or [self.marker])
        )
        also = ""
        if process is not None:
            also = f' grep -qzxF -e {shlex.quote(f"{PROCESS_ENV}={process}")} "$f" &&'
        return (
            f"for f in $(grep -lzxF {needle} /proc/[0-9]*/environ 2>/dev/null); do"
            f' p=${{f#/proc/}};{also} kill -{name} "${{p%/environ}}" 2>/dev/null; done; true'
        )

    def run_on(
        self, machine: int, remote: str, timeout_s: float | None = None
    ) -> subprocess.CompletedProcess:
        """Run the shell line ``remote`` on ``machine``'s host and wait (TimeoutExpired if slow)."""
        _check_machine(self, machine)
        return subprocess.run(
            [*self.ssh_cmd, self.ssh_hosts[machine], remote],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s or self.control_timeout_s,
        )

    def signal_process(self, machine: int, process: str, sig: int) -> None:
        """Send ``sig`` to the run's process named ``process`` on ``machine`` (and its children)."""
        script = self.kill_command(sig, process, [self.helper_marker])
        self._signal_hosts([self.ssh_hosts[machine]], script)

    def signal_all(self, sig: int, helpers: bool = False) -> None:
        """Send ``sig`` to the run's processes on every host (one ssh per host, in parallel).

        The helpers (sidecars) too only with ``helpers``: they outlive the trainers.
        """
        markers = [self.marker, self.helper_marker] if helpers else [self.marker]
        script = self.kill_command(sig, markers=markers)
        self._signal_hosts(list(dict.fromkeys(self.ssh_hosts)), script)

    def _signal_hosts(self, hosts: list[str], script: str) -> None:
        procs = [
            (
                host,
                subprocess.Popen(
                    [*self.ssh_cmd, host, script],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                ),
            )
            for host in hosts
        ]
        deadline = time.monotonic() + self.control_timeout_s
        for host, p in procs:
            try:
                _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                log.warning("%s: signalling the run's processes timed out", host)
                continue
            if p.returncode != 0:
                msg = err.decode(errors="replace").strip()
                log.warning("%s: signalling the run's processes failed: %s", host, msg)

    def check_hosts(self) -> list[str]:
        """One line per host that ssh cannot run ``true`` on (empty: all reachable)."""
        problems = []
        for host in dict.fromkeys(self.ssh_hosts):
            try:
                p = subprocess.run(
                    [*self.ssh_cmd, host, "true"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=self.control_timeout_s,
                )
            except subprocess.TimeoutExpired:
                problems.append(f"{host}: no answer within {self.control_timeout_s:g} s")
                continue
            if p.returncode != 0:
                problems.append(f"{host}: {p.stderr.strip() or f'exit code {p.returncode}'}")
        return problems

    def close(self) -> None:
        """SIGKILL whatever of the run is left on the hosts; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.signal_all(signal.SIGKILL, helpers=True)

    def __enter__(self) -> SshCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SshCluster({self.ssh_hosts}, run_id={self.run_id!r})"
