"""The supervisor with dummy processes on the loopback cluster: exits, failures, cleanup."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from rudder.launcher.cluster import LocalCluster, ProcessSpec
from rudder.launcher.supervisor import RunReport, Supervisor

SLEEP_FOREVER = "import time; time.sleep(600)"


def spec(name: str, code: str, role: str = "trainer", machine: int = 0, **env: str) -> ProcessSpec:
    return ProcessSpec(name, machine, [sys.executable, "-c", code], dict(env), role)


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def supervise(tmp_path, events):
    """Supervisors over a 2-machine loopback cluster, all stopped when the test ends."""
    made: list[Supervisor] = []

    def make(timeout_s: float = 30.0, grace_s: float = 1.0) -> Supervisor:
        sup = Supervisor(
            LocalCluster(2),
            tmp_path / "logs",
            timeout_s=timeout_s,
            grace_s=grace_s,
            poll_interval_s=0.05,
            on_event=events.append,
        )
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop_all()


def by_name(report: RunReport) -> dict:
    return {p.name: p for p in report.processes}


def assert_all_gone(pids) -> None:
    for pid in pids:
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            continue
        # An orphan reparented to an init that does not reap stays a zombie: dead all the same.
        assert status == psutil.STATUS_ZOMBIE, f"pid {pid} still {status}"


def test_success_waits_for_servers_then_stops_the_rest(supervise, events, tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()
    trainer = "import time, sys; time.sleep(0.3); open(sys.argv[1], 'w').close()"
    waiter = (
        "import os, sys, time\n"
        "while not all(os.path.exists(f) for f in sys.argv[1:]): time.sleep(0.02)\n"
    )
    done = [str(flags / f"t{i}") for i in range(2)]
    sup = supervise(grace_s=1.5)
    pids = [
        sup.start(
            ProcessSpec("m0-server0", 0, [sys.executable, "-c", waiter, *done], {}, "server")
        ),
        sup.start(spec("m1-server0", SLEEP_FOREVER, role="server", machine=1)),
        *(
            sup.start(
                ProcessSpec(
                    f"m{i}-trainer0", i, [sys.executable, "-c", trainer, done[i]], {}, "trainer"
                )
            )
            for i in range(2)
        ),
    ]
    report = sup.wait()

    assert report.ok, report.describe()
    assert report.reason == "all trainers finished"
    procs = by_name(report)
    assert procs["m0-server0"].returncode == 0 and not procs["m0-server0"].stopped_by_supervisor
    assert procs["m1-server0"].stopped_by_supervisor
    assert procs["m1-server0"].signal == "SIGTERM" and procs["m1-server0"].returncode is None
    assert all(procs[f"m{i}-trainer0"].returncode == 0 for i in range(2))
    assert report.failed() == []
    assert 1.5 <= report.duration_s < 10
    assert f"started m0-server0 (pid {pids[0]})" in events
    assert "m1-trainer0 exited 0" in events
    assert_all_gone(pids)


def test_failing_trainer_stops_everything_and_shows_its_log(supervise):
    sup = supervise()
    sup.start(spec("m0-server0", SLEEP_FOREVER, role="server"))
    sup.start(spec("m0-trainer0", SLEEP_FOREVER))
    code = (
        "import sys, time\n"
        "for i in range(30): print(f'line {i}', file=sys.stderr)\n"
        "time.sleep(0.2); sys.exit(3)\n"
    )
    bad = sup.start(spec("m1-trainer0", code, machine=1))
    report = sup.wait()

    assert not report.ok
    assert report.reason == f"m1-trainer0 (pid {bad}) died: exit code 3"
    [failed] = report.failed()
    assert failed.name == "m1-trainer0" and failed.returncode == 3 and failed.signal is None
    assert "line 29" in failed.log_tail and "line 9\n" not in failed.log_tail  # the last 20
    assert Path(failed.log_path).read_text().startswith("line 0")
    others = [p for p in report.processes if p.name != "m1-trainer0"]
    assert all(p.stopped_by_supervisor for p in others)
    assert "exit code 3" in report.describe() and "line 29" in report.describe()
    assert_all_gone(p.pid for p in report.processes)


def test_trainer_killed_by_a_signal_is_reported(supervise):
    sup = supervise()
    sup.start(spec("m0-server0", SLEEP_FOREVER, role="server"))
    victim = sup.start(spec("m1-trainer0", SLEEP_FOREVER, machine=1))
    threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
    report = sup.wait()

    assert not report.ok
    assert report.reason == f"m1-trainer0 (pid {victim}) died: killed by SIGKILL"
    [failed] = report.failed()
    assert failed.signal == "SIGKILL" and failed.returncode is None


def test_timeout_stops_everything_and_names_what_was_running(supervise):
    sup = supervise(timeout_s=1.0, grace_s=0.5)
    sup.start(spec("m0-server0", SLEEP_FOREVER, role="server"))
    sup.start(spec("m0-trainer0", SLEEP_FOREVER))
    sup.start(spec("m1-trainer0", "pass", machine=1))
    t0 = time.monotonic()
    report = sup.wait()

    assert not report.ok
    assert report.reason == "timeout after 1 s (still running: m0-server0, m0-trainer0)"
    assert 0.9 <= time.monotonic() - t0 < 5
    assert by_name(report)["m1-trainer0"].returncode == 0
    assert_all_gone(p.pid for p in report.processes)


def test_sigterm_ignored_escalates_to_sigkill(supervise, events):
    sup = supervise(timeout_s=0.5, grace_s=0.5)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    pid = sup.start(spec("m0-server0", stubborn, role="server"))
    report = sup.wait()

    assert by_name(report)["m0-server0"].signal == "SIGKILL"
    assert any("SIGKILL" in e for e in events)
    assert_all_gone([pid])


@pytest.mark.parametrize("exit_code", [0, 1])
@pytest.mark.parametrize("detach", [False, True], ids=["same-group", "own-session"])
def test_no_orphan_survives_its_dead_parent(supervise, tmp_path, exit_code, detach):
    """The parent dies at once; its child sleeps on, in its group or in a session of its own."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        f" start_new_session={detach})\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        f"sys.exit({exit_code})\n"
    )
    sup = supervise()
    sup.start(spec("m0-trainer0", code))
    report = sup.wait()

    assert report.ok == (exit_code == 0)
    grandchild = int(pid_file.read_text())
    assert_all_gone([grandchild])


@pytest.mark.parametrize("where", ["self", "child"])
def test_peak_rss_is_reported(supervise, where):
    alloc = "import time; b = b'x' * (100 << 20); time.sleep(0.5)"
    code = (
        alloc
        if where == "self"
        else f"import subprocess, sys; subprocess.run([sys.executable, '-c', {alloc!r}])"
    )
    sup = supervise()
    sup.start(spec("m0-trainer0", code))
    report = sup.wait()

    assert report.ok, report.describe()
    assert report.processes[0].peak_rss_bytes >= 100 << 20


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_everything_then_reraises(supervise, signum):
    sup = supervise()
    pids = [
        sup.start(spec("m0-server0", SLEEP_FOREVER, role="server")),
        sup.start(spec("m0-trainer0", SLEEP_FOREVER)),
    ]
    # Python leaves SIGINT ignored when it was started so (a background job of a shell without
    # job control): give Ctrl-C its usual meaning here, however pytest was started.
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signum))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sup.wait()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, sigint)
    assert sup.report is not None and sup.report.reason == "interrupted"
    assert not sup.report.ok
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    assert_all_gone(pids)


def test_leaving_the_block_stops_everything(tmp_path):
    started = []

    def run_and_fail():
        with Supervisor(LocalCluster(1), tmp_path, timeout_s=30, grace_s=1) as sup:
            started.append(sup)
            started.append(sup.start(spec("m0-trainer0", SLEEP_FOREVER)))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_and_fail()
    sup, pid = started
    assert_all_gone([pid])
    with pytest.raises(RuntimeError, match="already stopped"):
        sup.start(spec("m0-trainer1", "pass"))


def test_env_reaches_the_process_and_names_are_unique(supervise, tmp_path):
    sup = supervise()
    code = "import os; print(os.environ['RUDDER_TEST_VALUE'])"
    sup.start(spec("m0-trainer0", code, RUDDER_TEST_VALUE="it's a value"))
    with pytest.raises(ValueError, match="already started"):
        sup.start(spec("m0-trainer0", "pass"))
    report = sup.wait()
    assert report.ok and report.processes[0].log_tail == "it's a value\n"


def test_specs_and_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="role"):
        ProcessSpec("m0-x", 0, ["true"], {}, "worker")
    with pytest.raises(ValueError, match="file name"):
        ProcessSpec("m0/x", 0, ["true"], {}, "server")
    with pytest.raises(ValueError, match="timeout_s"):
        Supervisor(LocalCluster(1), tmp_path, timeout_s=0)
    with pytest.raises(ValueError, match="out of range"):
        LocalCluster(2).command(ProcessSpec("m2-x", 2, ["true"], {}, "server"))
