"""The agent sidecars of a training run: one ``rudder agent serve`` per machine, kept alive.

Sidecars are plain processes on the launching host, not inside the emulated machines'
network namespaces: their ``ipc://`` sockets are files every namespace sees (a run directory,
never the machines' private /dev/shm), and the LLM server they call listens on the host's
loopback. :class:`AgentSidecars` starts them, waits until each answers a ping, restarts one
that dies (capped backoff, counted, logged) and stops them all on exit: SIGTERM, a grace
period, SIGKILL, socket files removed. Trainers reconnect to a restarted sidecar by themselves.
Every death is an outage in :meth:`AgentSidecars.faults` (for ``summary.json``): when, how it
ended (exit code or signal), and how long until the restarted sidecar answered a ping. A sidecar
that stops answering without exiting (stopped, hung) is found by a ping watchdog
(:class:`Watchdog`): ``misses`` unanswered pings in a row are an outage with the exit
``unresponsive``, from the first unanswered ping until it answers again. It is not killed: its
trainers fall back to skip by themselves, and a sidecar that is only slow keeps its state.

On real hosts (``hosts``, an :class:`~rudder.launcher.ssh.SshCluster`) each sidecar runs on its
machine's host over ssh, bound to that host's loopback: the local process is the ssh client,
which exits with the remote sidecar's status, so watching and restarting work unchanged; pings
and statistics run ``rudder agent stats`` on the host; stopping signals the remote process by
name. Logs and decision logs land in the run directory, which hosts share (docs/cluster.md).
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rudder.launcher.cluster import ProcessSpec
from rudder.launcher.ssh import PROCESS_ENV, SshCluster
from rudder.protocol import Ping, Pong, check_endpoint, ipc_endpoint, ipc_path, private_dir
from rudder.retry import capped_backoff

log = logging.getLogger(__name__)

# The options a sidecar passes through to `rudder agent serve`, and their flags.
SIDECAR_OPTIONS = {
    "llm_url": "--llm-url",
    "llm_model": "--llm-model",
    "prompt": "--prompt",
    "checkpoint": "--checkpoint",  # "{index}" in the path becomes the sidecar's machine index
    "run_id": "--run-id",
    "decide_timeout_s": "--decide-timeout",
    "expiry_s": "--expiry",
    # the host's own embedded LLM server if nothing answers at llm_url there (its log file)
    "start_llm_log": "--start-llm",
    "llm_threads": "--llm-threads",
    "llm_nice": "--llm-nice",
}


UNRESPONSIVE = "unresponsive"  # an Outage's exit: alive but not answering pings


@dataclass(frozen=True, slots=True)
class Watchdog:
    """How live sidecars are pinged to notice one that stopped answering without exiting."""

    misses: int = 3  # unanswered pings in a row that make an outage (0: no watchdog)
    interval_s: float = 1.0  # between pings of one sidecar
    timeout_s: float = 1.0  # a ping's wait for its answer

    def __post_init__(self) -> None:
        if self.misses < 0 or self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError(f"watchdog: misses >= 0, interval_s and timeout_s > 0, got {self}")


LOCAL_WATCHDOG = Watchdog()
# Over ssh a ping runs `rudder agent stats` on the host (a Python start): rarer, longer.
SSH_WATCHDOG = Watchdog(interval_s=15.0, timeout_s=5.0)


class SidecarError(RuntimeError):
    """A sidecar did not come up (its log's last lines are in the message)."""


@dataclass(slots=True)
class Outage:
    """A sidecar down: from its death being noticed to its successor answering a ping."""

    start_s: float  # since the sidecars started
    exit: str  # "exit code 1", "SIGKILL", or UNRESPONSIVE (alive, not answering pings)
    duration_s: float | None = None  # None while it lasts
    recovered: bool = False  # a restarted sidecar answered (False: down until the end)

    def to_dict(self) -> dict:
        return {
            "start_s": round(self.start_s, 3),
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "exit": self.exit,
            "recovered": self.recovered,
        }


def sidecar_endpoints(run_dir: str | Path, machines: int) -> list[str]:
    """One ipc endpoint per machine under ``run_dir/agent/`` (or a short fallback path).

    ``run_dir/agent/`` is created mode 0700: the sockets (and the agents' checkpoints) are
    for this user's processes only.
    """
    agent_dir = private_dir(Path(run_dir) / "agent")
    return [ipc_endpoint(agent_dir, f"m{m}") for m in range(machines)]


@dataclass(slots=True)
class _Sidecar:
    index: int
    endpoint: str
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None  # it died; start it again at this time
    gave_up: bool = False
    outages: list[Outage] = field(default_factory=list)
    missed: int = 0  # the watchdog's unanswered pings in a row
    first_missed_s: float = 0.0  # when the first of them was sent (since the start)

    @property
    def name(self) -> str:
        return f"m{self.index}-agent"

    @property
    def down(self) -> bool:
        return bool(self.outages) and self.outages[-1].duration_s is None

    @property
    def unresponsive(self) -> bool:
        return self.down and self.outages[-1].exit == UNRESPONSIVE

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.restart_at is None


class AgentSidecars:
    """Runs one ``rudder agent serve`` per endpoint for the duration of a ``with`` block.

    ``restarts`` counts restarts over all sidecars; a sidecar that died more than
    ``max_restarts`` times stays down (its trainers answer skip) and is logged as an error.
    ``watchdog`` (default: :data:`LOCAL_WATCHDOG`, or :data:`SSH_WATCHDOG` with ``hosts``)
    pings the live ones.
    """

    def __init__(
        self,
        endpoints: list[str],
        decider: str,
        options: dict,
        log_dir: Path,
        restart: bool = True,
        max_restarts: int = 5,
        *,
        workers: int = 1,
        mode: str = "async",
        ready_timeout_s: float = 30.0,
        grace_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        check_interval_s: float = 0.2,
        hosts: SshCluster | None = None,
        watchdog: Watchdog | None = None,
    ):
        if not endpoints:
            raise ValueError("agent sidecars: no endpoints")
        if hosts is not None and len(endpoints) != hosts.num_machines:
            raise ValueError(f"agent sidecars: {len(endpoints)} endpoints for {hosts}")
        if hosts is None and len(set(endpoints)) != len(endpoints):
            raise ValueError(f"agent sidecars: endpoints must differ, got {endpoints}")
        for ep in endpoints:
            check_endpoint(ep)
        unknown = sorted(set(options) - set(SIDECAR_OPTIONS))
        if unknown:
            raise ValueError(
                f"agent sidecars: unknown options {unknown}; choose from {sorted(SIDECAR_OPTIONS)}"
            )
        if max_restarts < 0 or ready_timeout_s <= 0 or grace_s < 0:
            raise ValueError("agent sidecars: max_restarts, grace_s >= 0 and ready_timeout_s > 0")
        if not 0 <= backoff_initial_s <= backoff_max_s:
            raise ValueError("agent sidecars: 0 <= backoff_initial_s <= backoff_max_s")
        self.decider = decider
        self.options = {k: v for k, v in options.items() if v is not None}
        self.log_dir = Path(log_dir)
        self.restart = restart
        self.max_restarts = max_restarts
        self.workers = workers
        self.mode = mode
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.check_interval_s = check_interval_s
        self.hosts = hosts
        if watchdog is None:
            watchdog = LOCAL_WATCHDOG if hosts is None else SSH_WATCHDOG
        self.watchdog = watchdog
        self._sidecars = [
            _Sidecar(i, ep, self.log_dir / f"agent-{i}.log") for i, ep in enumerate(endpoints)
        ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._pinger: threading.Thread | None = None
        self._t0 = time.monotonic()  # reset by start(); outages are timed from it

    @property
    def endpoints(self) -> list[str]:
        return [s.endpoint for s in self._sidecars]

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._sidecars)

    def faults(self) -> list[dict]:
        """Per sidecar: restarts, whether it stayed down, and its outages (``Outage``)."""
        with self._lock:
            return [
                {
                    "index": s.index,
                    "restarts": s.restarts,
                    "gave_up": s.gave_up,
                    "outages": [o.to_dict() for o in s.outages],
                    "down_s": round(sum(o.duration_s or 0.0 for o in s.outages), 3),
                }
                for s in self._sidecars
            ]

    def pids(self) -> list[int | None]:
        """The running sidecars' process ids (None where one is down)."""
        with self._lock:
            return [
                s.proc.pid if s.proc and s.proc.poll() is None else None for s in self._sidecars
            ]

    def __enter__(self) -> AgentSidecars:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every sidecar and wait until each answers a ping (SidecarError if not)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        try:
            with self._lock:
                for s in self._sidecars:
                    self._spawn(s)
            for s in self._sidecars:
                self._wait_ready(s)
        except BaseException:
            self.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, name="rudder-sidecars", daemon=True)
        self._monitor.start()
        if self.watchdog.misses:
            # Its own thread: a ping waits up to its timeout (an ssh command: seconds), which
            # must not delay the monitor's noticing a death.
            self._pinger = threading.Thread(
                target=self._ping_watchdog, name="rudder-sidecar-watchdog", daemon=True
            )
            self._pinger.start()

    def stop(self) -> None:
        """Stop every sidecar: SIGTERM, ``grace_s``, SIGKILL; remove their socket files."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        if self._pinger is not None:  # at most one ping in flight; it changes nothing once stopped
            self._pinger.join(self.watchdog.timeout_s + 35.0)
            self._pinger = None
        with self._lock:
            live = [s for s in self._sidecars if s.proc is not None]
            for s in live:
                if s.proc.poll() is None:
                    self._signal(s, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            for s in live:
                try:
                    s.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("agent sidecar %d ignored SIGTERM; killing it", s.index)
                    self._signal(s, signal.SIGKILL)
                    s.proc.kill()
                    s.proc.wait()
            end = time.monotonic()
            for s in self._sidecars:
                if s.down:  # down until the end of the run
                    s.outages[-1].duration_s = end - self._t0 - s.outages[-1].start_s
                s.proc = None
                path = ipc_path(s.endpoint)
                if path is not None:
                    path.unlink(missing_ok=True)  # left by a sidecar that was killed

    # -- internals -----------------------------------------------------------------------------

    def _command(self, s: _Sidecar) -> list[str]:
        argv = [sys.executable, "-m", "rudder", "agent", "serve", "--bind", s.endpoint]
        argv += ["--decider", self.decider, "--workers", str(self.workers), "--mode", self.mode]
        argv += ["--log", str(self.log_dir / f"agent-{s.index}.decisions.jsonl")]
        for key, value in sorted(self.options.items()):
            argv += [SIDECAR_OPTIONS[key], str(value).format(index=s.index)]
        return argv

    def _signal(self, s: _Sidecar, sig: int) -> None:
        """The sidecar itself: on its host by name (the local ssh client then exits with it)."""
        if self.hosts is None:
            s.proc.send_signal(sig)
        else:
            self.hosts.signal_process(s.index, s.name, sig)

    def _spawn(self, s: _Sidecar) -> None:
        argv = self._command(s)
        if self.hosts is not None:
            spec = ProcessSpec(s.name, s.index, argv, {PROCESS_ENV: s.name}, role="agent")
            argv, _ = self.hosts.command(spec)
        with open(s.log_path, "ab") as out:  # appended: a restart keeps the earlier log
            s.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C is ours to forward, not theirs
            )
        log.info(
            "agent sidecar %d (%s) started: pid %d on %s",
            s.index,
            self.decider,
            s.proc.pid,
            s.endpoint,
        )

    def stats(self, index: int, timeout_s: float = 5.0) -> dict | None:
        """Sidecar ``index``'s statistics (``server``, ``trainers``); None if it does not answer.

        On a remote host, ``rudder agent stats`` runs there: the sidecar listens on loopback.
        """
        from rudder.protocol import StatsReply, StatsRequest
        from rudder.trainer_hooks.agent_client import ask

        ep = self._sidecars[index].endpoint
        if self.hosts is None:
            try:
                reply = ask(ep, StatsRequest(seq=1), timeout_s=timeout_s)
            except (TimeoutError, ValueError):
                return None
            if not isinstance(reply, StatsReply):
                return None
            return {
                "server": reply.server,
                "trainers": {str(k): v for k, v in reply.trainers.items()},
            }
        argv = [sys.executable, "-m", "rudder", "-q", "agent", "stats", "--connect", ep]
        argv += ["--json", "--timeout", f"{timeout_s:g}"]
        try:
            p = self.hosts.run_on(index, shlex.join(argv), timeout_s=timeout_s + 30.0)
            return json.loads(p.stdout) if p.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def _answers(self, s: _Sidecar, timeout_s: float) -> bool:
        if self.hosts is not None:
            return self.stats(s.index, timeout_s) is not None
        from rudder.trainer_hooks.agent_client import ask

        try:
            return isinstance(ask(s.endpoint, Ping(seq=1), timeout_s=timeout_s), Pong)
        except (TimeoutError, ValueError):
            return False

    def _wait_ready(self, s: _Sidecar) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        where = f" on {self.hosts.ssh_hosts[s.index]}" if self.hosts is not None else ""
        while time.monotonic() < deadline:
            if s.proc.poll() is not None:
                raise SidecarError(
                    f"agent sidecar {s.index}{where} exited with code {s.proc.returncode} "
                    f"before answering:\n{_tail(s.log_path)}"
                )
            if self._answers(s, 0.5):
                return
            time.sleep(0.05 if self.hosts is None else 0.5)
        raise SidecarError(
            f"agent sidecar {s.index}{where} did not answer a ping on {s.endpoint} within "
            f"{self.ready_timeout_s:g} s:\n{_tail(s.log_path)}"
        )

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            with self._lock:
                now = time.monotonic()
                for s in self._sidecars:
                    if self._stop.is_set():
                        return
                    self._check(s, now)
                recovering = [
                    s for s in self._sidecars if s.down and not s.unresponsive and s.running
                ]
            for s in recovering:  # outside the lock: a ping takes up to its timeout
                self._end_outage_if_answering(s)

    def _end_outage_if_answering(self, s: _Sidecar) -> None:
        answered = self._answers(s, 0.2)
        with self._lock:
            if answered and s.down:
                o = s.outages[-1]
                o.duration_s = time.monotonic() - self._t0 - o.start_s
                o.recovered = True
                log.info("agent sidecar %d is back after %.1f s", s.index, o.duration_s)

    def _ping_watchdog(self) -> None:
        while not self._stop.wait(self.watchdog.interval_s):
            with self._lock:
                # a sidecar recovering from a death is the monitor's (it pings it more often)
                live = [s for s in self._sidecars if s.running and (s.unresponsive or not s.down)]
            for s in live:
                sent = time.monotonic()
                answered = self._answers(s, self.watchdog.timeout_s)
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._heard(s, answered, sent)

    def _heard(self, s: _Sidecar, answered: bool, sent: float) -> None:
        """The watchdog's ping of a live sidecar: an outage after ``misses``, ended by an answer."""
        if not s.running:
            return  # it died meanwhile: the monitor's to record
        if answered:
            s.missed = 0
            if s.unresponsive:
                o = s.outages[-1]
                o.duration_s = time.monotonic() - self._t0 - o.start_s
                o.recovered = True
                log.info("agent sidecar %d answers again after %.1f s", s.index, o.duration_s)
            return
        if s.missed == 0:
            s.first_missed_s = sent - self._t0
        s.missed += 1
        if s.missed == self.watchdog.misses and not s.down:
            s.outages.append(Outage(start_s=s.first_missed_s, exit=UNRESPONSIVE))
            log.warning(
                "agent sidecar %d (pid %d) is alive but answered none of %d pings; its trainers "
                "decide by themselves until it answers (it is not restarted)",
                s.index,
                s.proc.pid,
                s.missed,
            )

    def _check(self, s: _Sidecar, now: float) -> None:
        if s.gave_up or s.proc is None:
            return
        code = s.proc.poll()
        if code is None:
            return
        if s.restart_at is None:
            s.missed = 0
            if not s.down:
                s.outages.append(Outage(start_s=now - self._t0, exit=_describe_exit(code)))
            elif s.unresponsive:  # one outage; it ends when the successor answers
                s.outages[-1].exit = f"{UNRESPONSIVE}, then {_describe_exit(code)}"
            if not self.restart or s.restarts >= self.max_restarts:
                s.gave_up = True
                log.error(
                    "agent sidecar %d (pid %d) died (exit %s) and stays down after %d "
                    "restarts; its trainers answer skip",
                    s.index,
                    s.proc.pid,
                    code,
                    s.restarts,
                )
                return
            delay = capped_backoff(s.restarts, self.backoff_initial_s, self.backoff_max_s)
            s.restart_at = now + delay
            log.warning(
                "agent sidecar %d (pid %d) died (exit %s); restarting in %.1f s (%d of %d)",
                s.index,
                s.proc.pid,
                code,
                delay,
                s.restarts + 1,
                self.max_restarts,
            )
        elif now >= s.restart_at:
            s.restart_at = None
            s.restarts += 1
            self._spawn(s)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Run on each host before its sidecar starts: what that host's agent needs to decide. An LLM
# that already answers there (a node's own Ollama) needs no model file; otherwise the model must
# be installed on the host (shared home, or `rudder models fetch` there): never copied silently.
_HOST_CHECK = """
import sys
from pathlib import Path
kind, arg, url, model = sys.argv[1:5]
if kind == "classifier":
    if not Path(arg).is_file():
        sys.exit(f"no classifier model file {arg}")
elif kind == "llm":
    from rudder.llm.embedded import answers
    if not answers(url):
        from rudder.llm.models import DEFAULT_MODEL, ModelError, resolve
        try:
            resolve(model or DEFAULT_MODEL)
        except ModelError as e:
            sys.exit(f"no LLM answers at {url} and {e}")
"""


def check_hosts_for_agent(
    hosts: SshCluster, decider: str, llm_url: str, llm_model: str | None
) -> None:
    """SidecarError naming every host that lacks the agent's model file (or cannot run Python).

    Checked before anything of the run starts on any host.
    """
    from rudder.decisions import DeciderSpec

    spec = DeciderSpec.parse(decider)
    argv = [sys.executable, "-c", _HOST_CHECK, spec.kind, spec.arg, llm_url, llm_model or ""]
    problems = []
    for m, host in enumerate(hosts.ssh_hosts):
        try:
            p = hosts.run_on(m, shlex.join(argv), timeout_s=hosts.control_timeout_s + 30.0)
        except subprocess.TimeoutExpired:
            problems.append(f"{host}: no answer")
            continue
        if p.returncode != 0:
            lines = (p.stderr or p.stdout).strip().splitlines()
            problems.append(f"{host}: {lines[-1] if lines else f'exit code {p.returncode}'}")
    if problems:
        raise SidecarError(
            f"the {decider} agent cannot run on every host (docs/cluster.md):\n  "
            + "\n  ".join(problems)
        )
