"""Start a run's processes, watch them, and stop all of them when it is over.

DistDGL does not fail fast: if one trainer dies, the others and the servers wait on barriers
forever. The supervisor therefore treats any process that exits non-zero or by a signal as the
end of the run, enforces a wall-clock deadline, and stops everything it started: SIGTERM to
each process group, ``grace_s`` to exit, SIGKILL, then a check that nothing of the run is left.

"Of the run" is found three ways, because a dead process's children are reparented away from
it: the process groups of processes still running (each leads a new session), every
descendant seen while sampling, and an environment marker (``RUDDER_SUPERVISOR_TOKEN``) that
every descendant inherits unless it clears its environment. The cluster is also asked to
signal what only it can see (processes on remote hosts, or in an emulated machine).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rudder.launcher.cluster import Cluster, ProcessSpec
from rudder.signals import in_main_thread, signal_name, sigterm_as_keyboard_interrupt

log = logging.getLogger(__name__)

TOKEN_ENV = "RUDDER_SUPERVISOR_TOKEN"
_LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 64 * 1024
_KILL_CONFIRM_S = 5.0  # how long SIGKILLed processes get to disappear before we complain


@dataclass(slots=True)
class ProcessResult:
    """How one process of the run ended."""

    name: str
    machine: int
    role: str
    pid: int
    returncode: int | None  # exit code; None if it was killed by a signal or never ended
    signal: str | None  # e.g. "SIGKILL" when a signal ended it
    stopped_by_supervisor: bool  # it was still running when the supervisor stopped the run
    peak_rss_bytes: int  # the process and its descendants (sampled), or the kernel's peak
    log_path: str
    log_tail: str  # last ~20 lines of its output, for failure reports

    @property
    def failed(self) -> bool:
        """Ended on its own with a non-zero code or by a signal."""
        if self.stopped_by_supervisor:
            return False
        return self.signal is not None or self.returncode not in (0, None)

    def describe_exit(self) -> str:
        if self.signal is not None:
            return f"killed by {self.signal}"
        if self.returncode is None:
            return "still running"
        return f"exit code {self.returncode}"


@dataclass(slots=True)
class RunReport:
    """The outcome of :meth:`Supervisor.wait`."""

    ok: bool
    reason: str  # "all trainers finished", "m1-trainer0 (pid 123) died: killed by SIGKILL", ...
    duration_s: float
    processes: list[ProcessResult]

    def failed(self) -> list[ProcessResult]:
        """The processes that ended on their own with an error, in start order."""
        return [p for p in self.processes if p.failed]

    def describe(self) -> str:
        """A multi-line summary: the reason, one line per process, failed processes' logs."""
        lines = [f"{'ok' if self.ok else 'FAILED'}: {self.reason} ({self.duration_s:.1f} s)"]
        for p in self.processes:
            how = p.describe_exit() + (" (stopped)" if p.stopped_by_supervisor else "")
            lines.append(
                f"  {p.name:<16} m{p.machine} {p.role:<8} pid {p.pid:<8} {how:<28}"
                f" peak {p.peak_rss_bytes / 2**20:,.0f} MiB  {p.log_path}"
            )
        for p in self.failed():
            lines.append(f"--- last lines of {p.log_path} ---")
            lines.append(p.log_tail.rstrip("\n") or "(empty)")
        return "\n".join(lines)


@dataclass(slots=True)
class _Proc:
    spec: ProcessSpec
    popen: subprocess.Popen
    log_path: Path
    stopped_by_supervisor: bool = False
    peak_rss_bytes: int = 0
    descendants: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode


class Supervisor:
    """Runs :class:`ProcessSpec` s on a cluster; :meth:`wait` decides when the run is over.

    Use as a context manager: leaving the block stops every process, whatever happened.
    ``on_event`` receives short progress lines ("started m0-server0 (pid 123)").
    """

    def __init__(
        self,
        cluster: Cluster,
        log_dir: Path,
        timeout_s: float,
        grace_s: float = 10.0,
        poll_interval_s: float = 0.2,
        on_event: Callable[[str], None] | None = None,
    ):
        if timeout_s <= 0 or grace_s < 0 or poll_interval_s <= 0:
            raise ValueError(
                "timeout_s and poll_interval_s must be > 0 and grace_s >= 0, got "
                f"timeout_s={timeout_s}, grace_s={grace_s}, poll_interval_s={poll_interval_s}"
            )
        self.cluster = cluster
        self.log_dir = Path(log_dir)
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.poll_interval_s = poll_interval_s
        self.on_event = on_event
        self.report: RunReport | None = None  # set by wait(), also when it re-raises Ctrl-C
        self.token = uuid.uuid4().hex
        self._procs: list[_Proc] = []
        self._t0: float | None = None
        self._stopped = False

    # -- starting ---------------------------------------------------------------------------

    def start(self, spec: ProcessSpec) -> int:
        """Start ``spec`` on its machine in a new session; output goes to ``<name>.log``."""
        if self._stopped:
            raise RuntimeError("this supervisor has already stopped its run")
        if any(p.spec.name == spec.name for p in self._procs):
            raise ValueError(f"a process named {spec.name!r} was already started")
        argv, extra_env = self.cluster.command(spec)
        env = {**os.environ, **extra_env, TOKEN_ENV: self.token}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cluster.local_cwd(spec),
                # Own session and process group: a terminal's Ctrl-C reaches only the
                # launcher, which then stops the run in order; killpg reaches descendants.
                start_new_session=True,
            )
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._procs.append(_Proc(spec, popen, log_path))
        self._event(f"started {spec.name} (pid {popen.pid})")
        log.debug("%s: %s", spec.name, argv)
        return popen.pid

    # -- waiting ----------------------------------------------------------------------------

    def wait(self) -> RunReport:
        """Block until the run succeeds, fails or times out; stop everything; report.

        Success: every trainer exited 0 (servers then get ``grace_s`` to exit by themselves,
        the rest are stopped). Failure: any process exits non-zero or by a signal. Ctrl-C or
        SIGTERM to the launcher: everything is stopped, ``self.report`` says "interrupted",
        and KeyboardInterrupt is re-raised.
        """
        if self.report is not None:
            return self.report
        if self._t0 is None:
            self._t0 = time.monotonic()
        try:
            with sigterm_as_keyboard_interrupt():
                ok, reason = self._watch()
        except KeyboardInterrupt:
            self._finish(False, "interrupted")
            raise
        return self._finish(ok, reason)

    def _watch(self) -> tuple[bool, str]:
        assert self._t0 is not None
        deadline = self._t0 + self.timeout_s
        trainers = [p for p in self._procs if p.spec.role == "trainer"]
        watched = trainers or self._procs  # with no trainers, the run ends when all processes do
        grace_deadline: float | None = None
        while True:
            self._sample()
            for p in self._reap():
                rc = p.returncode
                how = f"exited {rc}" if rc >= 0 else f"killed by {signal_name(-rc)}"
                self._event(f"{p.spec.name} {how}")
            failures = [p for p in self._procs if _failed(p)]
            if failures:
                first = failures[0]
                why = (
                    f"{first.spec.name} (pid {first.popen.pid}) died: {_describe(first.returncode)}"
                )
                if len(failures) > 1:
                    why += "; also " + ", ".join(
                        f"{p.spec.name} {_describe(p.returncode)}" for p in failures[1:]
                    )
                return False, why
            running = [p for p in self._procs if p.returncode is None]
            now = time.monotonic()
            if grace_deadline is None and all(p.returncode == 0 for p in watched):
                if not running:
                    return True, "all trainers finished" if trainers else "all processes finished"
                grace_deadline = now + self.grace_s
                self._event(
                    f"all trainers finished; {len(running)} process(es) get {self.grace_s:g} s"
                    " to exit"
                )
            if grace_deadline is not None and (not running or now >= grace_deadline):
                return True, "all trainers finished"
            if now >= deadline:
                names = ", ".join(p.spec.name for p in running)
                return False, f"timeout after {self.timeout_s:g} s (still running: {names})"
            limit = min(deadline, grace_deadline or deadline)
            time.sleep(max(0.0, min(self.poll_interval_s, limit - now)))

    def _sample(self) -> None:
        """Peak RSS of each running process tree, and every descendant seen, for the kill."""
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        for p in self._procs:
            if p.returncode is not None or p.popen.pid not in table:
                continue
            rss, stack = 0, [p.popen.pid]
            while stack:
                pid = stack.pop()
                rss += table[pid][1]
                for c in children.get(pid, ()):
                    stack.append(c)
                    if c not in p.descendants:
                        with contextlib.suppress(psutil.Error):
                            p.descendants[c] = psutil.Process(c)  # remembers its start time
            p.peak_rss_bytes = max(p.peak_rss_bytes, rss)

    def _reap(self) -> list[_Proc]:
        """Collect exits with wait4, which also gives the kernel's peak RSS of the process."""
        ended = []
        for p in self._procs:
            if p.returncode is not None:
                continue
            try:
                pid, status, usage = os.wait4(p.popen.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else's Popen.wait: ask Popen
                if p.popen.poll() is not None:
                    ended.append(p)
                continue
            if pid == 0:
                continue
            # Popen would reap again otherwise; setting returncode is what Popen.poll() does.
            p.popen.returncode = os.waitstatus_to_exitcode(status)
            p.peak_rss_bytes = max(p.peak_rss_bytes, usage.ru_maxrss * 1024)  # KiB on Linux
            ended.append(p)
        return ended

    # -- stopping ---------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Stop every process of the run: SIGTERM, ``grace_s``, SIGKILL, then verify."""
        if self._stopped:
            return
        self._stopped = True
        with _signals_deferred():
            self._stop_all()

    def _stop_all(self) -> None:
        self._sample()
        self._reap()
        running = [p for p in self._procs if p.returncode is None]
        for p in running:
            p.stopped_by_supervisor = True
        if running:
            self._event(f"stopping {', '.join(p.spec.name for p in running)} (SIGTERM)")
        self._signal_run(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and self._leftovers():
            time.sleep(0.05)
            self._reap()
        stubborn = [p.spec.name for p in self._procs if p.returncode is None]
        if self._leftovers():
            what = ", ".join(stubborn) if stubborn else "descendants"
            self._event(f"{what} still running {self.grace_s:g} s after SIGTERM; SIGKILL")
            self._signal_run(signal.SIGKILL)
        deadline = time.monotonic() + _KILL_CONFIRM_S
        while self._leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
            self._signal_run(signal.SIGKILL, cluster=False)  # stragglers forked meanwhile
        left = self._leftovers()
        if left:
            log.error("processes of the run survived SIGKILL: %s", sorted(left))
        for p in self._procs:  # reap the direct children (SIGKILL leaves nothing to wait for)
            if p.returncode is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=1.0)

    def _signal_run(self, sig: signal.Signals, cluster: bool = True) -> None:
        self._reap()
        for p in self._procs:
            # Only while the leader is unreaped: its pid (= the group id) cannot be reused
            # then. Members of a dead leader's group are reached below, by descendant or token.
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.popen.pid, sig)
        for pid, proc in self._run_processes().items():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
                log.debug("sent %s to %d", sig.name, pid)
        if not cluster:
            return
        try:
            self.cluster.signal_all(sig)  # remote hosts: one ssh round trip each
        except Exception as e:  # a cluster that cannot reach a host must not stop the cleanup
            log.warning("cluster could not signal its processes: %s", e)

    def _run_processes(self) -> dict[int, psutil.Process]:
        """Live processes of this run other than the direct children (which Popen holds)."""
        mine = {p.popen.pid for p in self._procs}
        found: dict[int, psutil.Process] = {}
        for p in self._procs:
            for pid, proc in p.descendants.items():
                if pid not in mine and proc.is_running():  # is_running checks pid reuse
                    found[pid] = proc
        for proc in _processes_with_token(self.token):
            if proc.pid not in mine:
                found.setdefault(proc.pid, proc)
        return {pid: proc for pid, proc in found.items() if _alive(proc)}

    def _leftovers(self) -> set[int]:
        self._reap()
        left = {p.popen.pid for p in self._procs if p.returncode is None}
        return left | set(self._run_processes())

    def _finish(self, ok: bool, reason: str) -> RunReport:
        try:
            self.stop_all()
        finally:  # a Ctrl-C re-delivered after the cleanup must not lose the report
            assert self._t0 is not None
            report = RunReport(
                ok=ok,
                reason=reason,
                duration_s=time.monotonic() - self._t0,
                processes=[self._result(p) for p in self._procs],
            )
            self.report = report
        self._event(("ok: " if ok else "failed: ") + reason)
        (log.info if ok else log.error)("run %s: %s", "finished" if ok else "failed", reason)
        return report

    def _result(self, p: _Proc) -> ProcessResult:
        rc = p.returncode
        return ProcessResult(
            name=p.spec.name,
            machine=p.spec.machine,
            role=p.spec.role,
            pid=p.popen.pid,
            returncode=rc if rc is not None and rc >= 0 else None,
            signal=signal_name(-rc) if rc is not None and rc < 0 else None,
            stopped_by_supervisor=p.stopped_by_supervisor,
            peak_rss_bytes=p.peak_rss_bytes,
            log_path=str(p.log_path),
            log_tail=_tail(p.log_path),
        )

    def _event(self, line: str) -> None:
        log.info("%s", line)
        if self.on_event is not None:
            self.on_event(line)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _failed(p: _Proc) -> bool:
    return not p.stopped_by_supervisor and p.returncode is not None and p.returncode != 0


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return "exited 0" if returncode == 0 else f"exit code {returncode}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _processes_with_token(token: str) -> Iterator[psutil.Process]:
    """Processes whose environment carries this run's token (they descend from the run)."""
    needle = f"{TOKEN_ENV}={token}".encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in env.split(b"\0"):
            with contextlib.suppress(psutil.Error):
                yield psutil.Process(int(entry))


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, int]]:
    """Parent pid and resident bytes of every process, by pid, in one pass over /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 21:
            table[int(entry)] = (int(fields[1]), int(fields[21]) * _PAGE_BYTES)
    return table


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(lines[-_LOG_TAIL_LINES:])


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Let a second Ctrl-C or SIGTERM not abort the cleanup half-way; re-deliver it after."""
    if not in_main_thread():
        yield
        return
    pending: list[int] = []

    def handler(signum: int, frame: object) -> None:
        name = signal_name(signum)
        log.warning("%s received while stopping the run; finishing the cleanup first", name)
        pending.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if pending:
            signal.raise_signal(pending[0])
