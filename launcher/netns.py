"""Emulated machines on one host: a network namespace and a private /dev/shm per machine.

dgl 2.1 assumes one machine per IP address and per /dev/shm: it finds its machine id by
matching local interface addresses against ip_config, and names shared-memory segments after
the data name only. Two machines on one host therefore collide. Here each machine gets

- its own network namespace ``<prefix>-<tag>-m<i>`` with ``lo`` and ``eth0`` (the machine's
  address, the only non-loopback one inside; IPv6 off), and
- its own mount namespace with a private tmpfs on /dev/shm, held open by a "holder" process
  and shared by every process of the machine (servers create the segments, trainers map them).

The machines' ``eth0`` are veth pairs whose other ends sit on a bridge inside a separate "hub"
namespace ``<prefix>-<tag>-hub``, not in the host's own namespace: the host's interfaces,
routes and firewall (br_netfilter + iptables FORWARD DROP, as Docker sets up, would drop
bridged traffic) are never touched, machines have no route anywhere else, and deleting the hub
deletes every link of the run at once. With a bandwidth, both ends of every veth get a ``tbf``
qdisc, so each machine's link is shaped in both directions (netem is not available here).

Nothing outside the run can reach the machines' addresses: the host's namespace has no
interface or route on the subnet and entering a namespace needs CAP_SYS_ADMIN, which matters
because DistDGL's RPC unpickles what it receives. A process spec with a ``user`` (the launcher
gives one to DistDGL servers, see :func:`unprivileged_user`) drops root through ``setpriv``.

Crashed runs leave named namespaces behind; :func:`cleanup_stale` removes those whose owning
launcher is gone. See docs/cluster.md for the measured set-up cost and throughput.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from rudder.launcher.cluster import DEFAULT_SUBNET, ClusterError, ProcessSpec, _check_machine
from rudder.launcher.nettools import (
    TBF_LATENCY,
    delete_netns,
    exec_in,
    kill_and_wait,
    list_netns,
    parse_rate,
    pids_in_netns,
    run,
    tbf_burst_bytes,
)

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/rudder")  # one JSON file per run: its owner, to tell live from stale
MACHINE_IFNAME = "eth0"
_HUB_BRIDGE = "br0"
_TOOLS = ("ip", "tc", "unshare", "nsenter", "mount", "setpriv")

_SHM_SIZE_RE = re.compile(r"^\d+(?:[kmgKMG%])?$")


# Writes to /proc/sys/net act on the writer's network namespace. "all" also switches off IPv6
# on interfaces that already exist; "default" covers those created later. Without IPv6 the
# machine's only non-loopback address is its IPv4 one, and nothing but our traffic crosses.
_NO_IPV6 = (
    "for c in all default; do f=/proc/sys/net/ipv6/conf/$c/disable_ipv6;"
    ' if [ -w "$f" ]; then echo 1 > "$f"; fi; done'
)


class _Holder:
    """A process that keeps a machine's mount namespace (private /dev/shm tmpfs) alive.

    It runs ``sh`` inside the machine's network namespace, in a mount namespace of its own,
    mounts the tmpfs, reports ``ready`` and blocks reading its stdin, a pipe from the
    launcher: if the launcher dies without cleaning up, the pipe closes and the holder exits.
    The tmpfs goes away once the holder and every process that entered its namespace are gone.
    Its $0 is a marker (``<prefix>-holder-<tag>-m<i>``) so stale holders can be found.
    """

    def __init__(self, netns: str, marker: str, shm_size: str, timeout_s: float = 15.0):
        script = (
            f"{_NO_IPV6}; "
            f"mount -t tmpfs -o size={shm_size},mode=1777 rudder-shm /dev/shm || exit 1; "
            "echo ready; read _ignored; exit 0"
        )
        argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private"]
        # `ip netns exec` and `unshare` exec (no fork), so the pid we get is the holder's own.
        self.popen = subprocess.Popen(
            [*argv, "sh", "-c", script, marker],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C for the launcher must not take the holder first
        )
        self.pid = self.popen.pid
        if not self._ready(timeout_s):
            err = self._stop_and_read_stderr()
            raise ClusterError(f"holder for {netns} did not start: {err or 'no output'}")

    def _ready(self, timeout_s: float) -> bool:
        assert self.popen.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=timeout_s):
                return False
        return self.popen.stdout.readline().strip() == b"ready"

    def _stop_and_read_stderr(self) -> str:
        self.stop()
        assert self.popen.stderr is not None
        return self.popen.stderr.read().decode(errors="replace").strip()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for f in (self.popen.stdin, self.popen.stdout):
            if f is not None:
                f.close()


def run_tag(run_id: str) -> str:
    """The tag in the names of a run's namespaces: ``<prefix>-<tag>-m0``, ``-hub``.

    A hash keeps names short, valid and fixed-width whatever the run id looks like.
    """
    return hashlib.sha1(run_id.encode()).hexdigest()[:8]


class _Names:
    """Names of one run's namespaces, holders and state file."""

    def __init__(self, prefix: str, run_id: str):
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
            raise ValueError(f"prefix must be 1-16 lowercase letters/digits, got {prefix!r}")
        self.prefix = prefix
        self.tag = run_tag(run_id)
        self.hub = f"{prefix}-{self.tag}-hub"
        self.state_path = STATE_DIR / f"{prefix}-{self.tag}.json"

    def machine(self, i: int) -> str:
        return f"{self.prefix}-{self.tag}-m{i}"

    def holder_marker(self, i: int) -> str:
        return f"{self.prefix}-holder-{self.tag}-m{i}"


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _owner_alive(state: dict | None) -> bool:
    """Whether the launcher that wrote ``state`` still runs (pid and start time both match)."""
    if not state:
        return False
    try:
        started = psutil.Process(int(state["owner_pid"])).create_time()
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False
    return abs(started - float(state.get("owner_started", -1))) < 0.01


class EmulatedCluster:
    """``netns`` mode: machines emulated with network and mount namespaces. Needs root.

    Machine ``i`` has address ``subnet`` host ``i + 1`` (198.18.0.1, .2, ... by default: the
    network address .0 is not a usable host address) on its ``eth0``. ``bandwidth`` (tc
    syntax, e.g. ``"1gbit"``) shapes every machine's link in both directions; None leaves the
    veths unshaped (~25 Gbit/s for one TCP stream here, CPU-bound). ``shm_size`` caps each
    machine's /dev/shm tmpfs (tmpfs ``size=`` syntax; memory is used only as files are written).

    Set-up is transactional: if a step fails, the steps before it are undone and
    :class:`ClusterError` says which step failed. ``close()`` undoes everything, is
    idempotent, and also runs at interpreter exit if the caller forgot.
    """

    def __init__(
        self,
        num_machines: int,
        run_id: str,
        bandwidth: str | None = None,
        subnet: str = DEFAULT_SUBNET,
        shm_size: str = "50%",
        *,
        prefix: str = "rudder",
        setup_timeout_s: float = 30.0,
    ):
        if num_machines < 1:
            raise ValueError(f"num_machines must be >= 1, got {num_machines}")
        if not run_id:
            raise ValueError("run_id must not be empty")
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as e:
            raise ValueError(f"subnet must be an IPv4 network like '198.18.0.0/24': {e}") from e
        if net.num_addresses - 2 < num_machines:
            raise ValueError(f"subnet {subnet} has too few host addresses for {num_machines}")
        if not _SHM_SIZE_RE.match(shm_size):
            raise ValueError(f"shm_size must look like '50%', '4g' or '512m', got {shm_size!r}")
        self.num_machines = num_machines
        self.run_id = run_id
        self.subnet = net
        self.bandwidth = bandwidth
        self.rate_bits = parse_rate(bandwidth) if bandwidth is not None else None
        self.shm_size = shm_size
        self.names = _Names(prefix, run_id)
        self._ips = [str(net.network_address + i + 1) for i in range(num_machines)]
        self._holders: list[_Holder] = []
        self._undo: list[tuple[str, Callable[[], None]]] = []
        ok, reason = _can_run_as_root()
        if not ok:
            raise ClusterError(f"cannot emulate machines: {reason}")
        t0 = time.monotonic()
        try:
            self._set_up(setup_timeout_s)
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)
        log.info(
            "emulated %d machines for run %s (%s, %s) in %.2f s",
            num_machines,
            run_id,
            ", ".join(self._ips),
            f"shaped to {bandwidth}" if bandwidth else "unshaped",
            time.monotonic() - t0,
        )

    # -- set-up -----------------------------------------------------------------------------

    def _step(self, what: str, do: Callable[[], object], undo: Callable[[], None] | None) -> None:
        try:
            do()
        except (ClusterError, OSError) as e:
            raise ClusterError(f"setting up emulated cluster, {what}: {e}") from e
        if undo is not None:
            self._undo.append((what, undo))

    def _set_up(self, timeout_s: float) -> None:
        n = self.names
        taken = [x for x in [n.hub, *map(n.machine, range(self.num_machines))] if x in list_netns()]
        if taken:
            owner = _read_state(n.state_path)
            who = (
                f"run by pid {owner['owner_pid']}"
                if _owner_alive(owner)
                else "left by a crashed run; remove with cleanup_stale()"
            )
            raise ClusterError(f"namespaces {', '.join(taken)} already exist ({who})")
        self._step("writing the run's state file", self._write_state, self._remove_state)
        self._step(
            f"creating hub namespace {n.hub}",
            lambda: run(["ip", "netns", "add", n.hub]),
            lambda: delete_netns(n.hub),
        )
        self._step("switching off IPv6 in the hub", lambda: exec_in(n.hub, _NO_IPV6), None)
        self._step(
            "creating the bridge",
            lambda: (
                run(["ip", "-n", n.hub, "link", "add", _HUB_BRIDGE, "type", "bridge"]),
                run(["ip", "-n", n.hub, "link", "set", _HUB_BRIDGE, "up"]),
            ),
            None,
        )
        for i in range(self.num_machines):
            self._set_up_machine(i, timeout_s)

    def _set_up_machine(self, i: int, timeout_s: float) -> None:
        hub, ns, port = self.names.hub, self.names.machine(i), f"m{i}"
        self._step(
            f"creating namespace {ns}",
            lambda: run(["ip", "netns", "add", ns]),
            lambda: delete_netns(ns),
        )
        # The holder first: it switches IPv6 off before eth0 exists.
        self._step(
            f"starting the /dev/shm holder of machine {i}",
            lambda: self._holders.append(
                _Holder(ns, self.names.holder_marker(i), self.shm_size, timeout_s)
            ),
            lambda: self._holders[i].stop(),
        )
        ip, plen = self._ips[i], self.subnet.prefixlen
        link = ["ip", "link", "add", port, "netns", hub, "type", "veth"]
        self._step(
            f"linking machine {i} to the bridge",
            lambda: (
                run([*link, "peer", "name", MACHINE_IFNAME, "netns", ns]),
                run(["ip", "-n", hub, "link", "set", port, "master", _HUB_BRIDGE, "up"]),
                run(["ip", "-n", ns, "addr", "add", f"{ip}/{plen}", "dev", MACHINE_IFNAME]),
                run(["ip", "-n", ns, "link", "set", MACHINE_IFNAME, "up"]),
                run(["ip", "-n", ns, "link", "set", "lo", "up"]),
            ),
            None,  # deleting either namespace deletes the veth pair
        )
        if self.rate_bits is not None:
            tbf = self._tbf_args()
            self._step(
                f"shaping machine {i}'s link to {self.bandwidth}",
                lambda: (
                    run(["tc", "-n", ns, "qdisc", "add", "dev", MACHINE_IFNAME, *tbf]),
                    run(["tc", "-n", hub, "qdisc", "add", "dev", port, *tbf]),
                ),
                None,
            )

    def _tbf_args(self) -> list[str]:
        assert self.rate_bits is not None
        burst = tbf_burst_bytes(self.rate_bits)
        rate = f"{self.rate_bits}bit"
        return ["root", "tbf", "rate", rate, "burst", str(burst), "latency", TBF_LATENCY]

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "run_id": self.run_id,
            "owner_pid": os.getpid(),
            "owner_started": psutil.Process().create_time(),
            "num_machines": self.num_machines,
            "netns": [self.names.hub, *map(self.names.machine, range(self.num_machines))],
        }
        self.names.state_path.write_text(json.dumps(state, indent=1) + "\n")

    def _remove_state(self) -> None:
        self.names.state_path.unlink(missing_ok=True)

    # -- the Cluster interface ----------------------------------------------------------------

    def machine_ip(self, machine: int) -> str:
        _check_machine(self, machine)
        return self._ips[machine]

    def netns(self, machine: int) -> str:
        """The name of ``machine``'s network namespace (for ``ip netns exec``)."""
        _check_machine(self, machine)
        return self.names.machine(machine)

    def interface(self, machine: int) -> str | None:
        _check_machine(self, machine)
        return MACHINE_IFNAME

    def command(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        """``nsenter`` into the machine's namespaces, then exec ``spec.argv``.

        nsenter execs without forking, so the pid the supervisor gets is the worker's own.
        Entering a mount namespace resets the working directory to /, hence ``--wd``. With
        ``spec.user``, ``setpriv`` (which execs too) drops root on the way: that uid and gid,
        no supplementary groups, no capabilities, and no way back (no_new_privs).
        """
        _check_machine(self, spec.machine)
        if len(self._holders) <= spec.machine:
            raise ClusterError("the emulated cluster is closed")
        holder = self._holders[spec.machine]
        if holder.popen.poll() is not None:
            raise ClusterError(f"the holder of machine {spec.machine} has exited")
        wd = spec.cwd or os.getcwd()
        argv = ["nsenter", f"--target={holder.pid}", "--net", "--mount", f"--wd={wd}", "--"]
        if spec.user is not None:
            uid, gid = spec.user
            argv += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            argv += ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
        return [*argv, *spec.argv], dict(spec.env)

    def local_cwd(self, spec: ProcessSpec) -> str | None:
        return spec.cwd

    def signal_all(self, sig: int) -> None:
        """Signal every process inside the machines' namespaces except the holders."""
        holders = {h.pid for h in self._holders}
        for i in range(len(self._holders)):
            for pid in pids_in_netns(self.names.machine(i)):
                if pid not in holders:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)

    def close(self) -> None:
        """Kill what runs in the machines, delete the namespaces (and so every link)."""
        t0 = time.monotonic()
        had_any = bool(self._undo)
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # keep undoing: a half-removed run is worse than a warning
                log.warning("undoing %r failed: %s", what, e)
        self._holders.clear()
        atexit.unregister(self.close)
        if had_any:
            log.info(
                "removed emulated cluster of run %s in %.2f s", self.run_id, time.monotonic() - t0
            )

    def __enter__(self) -> EmulatedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shaped = f", bandwidth={self.bandwidth!r}" if self.bandwidth else ""
        return (
            f"EmulatedCluster({self.num_machines}, {self.run_id!r}{shaped}, tag={self.names.tag})"
        )

    # -- availability -------------------------------------------------------------------------

    @staticmethod
    def available() -> tuple[bool, str]:
        """Whether this host can emulate machines, and if not, why (for logs and skips).

        Checks root, the tools, and actually creates a throw-away namespace with a veth pair,
        a bridge, a tbf qdisc and a tmpfs mount (~0.1 s).
        """
        ok, reason = _can_run_as_root()
        if not ok:
            return False, reason
        probe = f"rudder-probe-{os.getpid()}"
        tbf = ["root", "tbf", "rate", "1gbit", "burst", "131072", "latency", TBF_LATENCY]
        in_probe = ["ip", "netns", "exec", probe, "unshare", "--mount", "--propagation", "private"]
        steps = [
            ["ip", "netns", "add", probe],
            ["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
            ["ip", "-n", probe, "link", "add", "pb", "type", "bridge"],
            ["tc", "-n", probe, "qdisc", "add", "dev", "p0", *tbf],
            [*in_probe, "mount", "-t", "tmpfs", "-o", "size=1m", "rudder-probe", "/dev/shm"],
        ]
        try:
            for argv in steps:
                run(argv)
        except ClusterError as e:
            return False, str(e)
        finally:
            with contextlib.suppress(ClusterError):
                delete_netns(probe)
        return True, "network namespaces, veth, bridge, tbf and tmpfs mounts work"


UNPRIVILEGED_USER = "nobody"  # what DistDGL servers in emulated machines drop root to


def unprivileged_user(readable: list[Path]) -> tuple[tuple[int, int] | None, str]:
    """(uid, gid) of :data:`UNPRIVILEGED_USER` if it can read every path in ``readable``.

    Otherwise None and why (logged by the caller): the user is missing, or the first path it
    cannot read (a directory on the way that is not searchable counts). One ``setpriv``
    process checks them all, as that user, with ``test -r``.
    """
    import pwd

    try:
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None, f"no user {UNPRIVILEGED_USER!r} on this host"
    check = 'for p do [ -r "$p" ] || { printf %s "$p"; exit 1; }; done'
    drop = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    out = subprocess.run(
        [*drop, "sh", "-c", check, "sh", *map(str, readable)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        what = out.stdout or out.stderr.strip()
        return None, f"{UNPRIVILEGED_USER} (uid {pw.pw_uid}) cannot read {what}"
    return (pw.pw_uid, pw.pw_gid), ""


def _can_run_as_root() -> tuple[bool, str]:
    if os.uname().sysname != "Linux":
        return False, "namespaces need Linux"
    if os.geteuid() != 0:
        return False, f"needs root (running as uid {os.geteuid()}); use loopback mode or sudo"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return False, f"missing tools: {', '.join(missing)} (iproute2, util-linux)"
    return True, ""


# -- leftovers of crashed runs ---------------------------------------------------------------


def cleanup_stale(prefix: str = "rudder") -> list[str]:
    """Remove what crashed runs left: namespaces (with their links), holders, state files.

    A run counts as crashed when the launcher that created it (pid and start time recorded in
    /run/rudder) is gone; runs whose launcher still lives are left alone, so this is safe to
    call while other runs go on. Processes still running inside a stale run's machines are
    killed. Returns one line per thing removed.
    """
    removed: list[str] = []
    run_re = re.compile(rf"^{re.escape(prefix)}-([0-9a-f]{{8}})-(hub|m\d+)$")
    probe_re = re.compile(rf"^{re.escape(prefix)}-probe-(\d+)$")
    holder_re = re.compile(rf"^{re.escape(prefix)}-holder-([0-9a-f]{{8}})-m\d+$")

    by_tag: dict[str, list[str]] = {}
    for name in list_netns():
        if m := run_re.match(name):
            by_tag.setdefault(m.group(1), []).append(name)
        elif (m := probe_re.match(name)) and not psutil.pid_exists(int(m.group(1))):
            try:
                delete_netns(name)
                removed.append(f"netns {name}")
            except ClusterError as e:
                log.warning("could not remove netns %s: %s", name, e)
    holders: dict[str, list[psutil.Process]] = {}
    for p in psutil.process_iter(["cmdline"]):
        for arg in p.info["cmdline"] or ():
            if m := holder_re.match(arg):
                holders.setdefault(m.group(1), []).append(p)
    states = {}
    if STATE_DIR.is_dir():
        for path in STATE_DIR.glob(f"{prefix}-*.json"):
            states[path.stem[len(prefix) + 1 :]] = path

    for tag in sorted(set(by_tag) | set(holders) | set(states)):
        state_path = states.get(tag)
        state = _read_state(state_path) if state_path else None
        if _owner_alive(state):
            log.info(
                "run %s (tag %s) is live, owned by pid %s", state["run_id"], tag, state["owner_pid"]
            )
            continue
        for p in holders.get(tag, ()):
            kill_and_wait([p.pid])
            removed.append(f"holder process {p.pid}")
        # Machines before the hub: their processes die before their links do.
        for name in sorted(by_tag.get(tag, ()), key=lambda s: s.endswith("-hub")):
            try:
                delete_netns(name)
                removed.append(f"netns {name}")
            except ClusterError as e:
                log.warning("could not remove netns %s: %s", name, e)
        if state_path is not None:
            state_path.unlink(missing_ok=True)
            removed.append(f"state file {state_path}")
    for line in removed:
        log.info("cleanup_stale removed %s", line)
    return removed
