"""Real DistDGL training: 2 emulated machines, real processes, real sockets.

Namespaces when the suite runs as root (as CI does), loopback mode otherwise.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
from training_support import make_parts, no_leftovers, rudder, run_processes  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return make_parts(tmp_path_factory.mktemp("graph"))


@pytest.mark.usefixtures("no_leftovers")
def test_two_machines_train_with_identical_features(parts, tmp_path):
    out = tmp_path / "run"
    rudder(
        "-q",
        "train",
        "--partitions",
        parts,
        "--out",
        out,
        "--machines",
        2,
        "--epochs",
        2,
        "--batch-size",
        100,
        "--policy",
        "rudder",
        "--decider",
        "always",
        "--buffer",
        0.25,
        "--verify-features",
        "--record-trace",
        "--timeout",
        300,
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] and s["epochs"] == 2 and len(s["trainers"]) == 2
    assert s["hit_rate"] > 0
    assert s["verification"]["mismatches"] == 0 and s["verification"]["hits_checked"] > 0
    assert {p for p in s["peak_rss_bytes"]} == {
        "m0-server0",
        "m1-server0",
        "m0-trainer0",
        "m1-trainer0",
    }
    assert run_processes(out) == []

    # The recorded trace replays to exactly what the live run did (same ids, same decisions).
    for t in s["trainers"]:
        replay_json = tmp_path / f"replay-{t['rank']}.json"
        rudder(
            "-q",
            "replay",
            "--trace",
            out / "trace",
            "--rank",
            t["rank"],
            "--policy",
            "rudder",
            "--decider",
            "always",
            "--buffer",
            0.25,
            "--json",
            replay_json,
        )
        replayed = json.loads(replay_json.read_text())["results"][0]
        assert replayed["hits"] == t["totals"]["hits"]
        assert replayed["rows_fetched"] == t["totals"]["rows_fetched"]
    report = rudder("replay", "--trace", out / "trace", "--policy", "all", "--buffer", 0.25)
    assert "belady" in report.stdout


@pytest.mark.usefixtures("no_leftovers")
def test_a_killed_trainer_stops_the_whole_run(parts, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rudder",
            "train",
            "--partitions",
            str(parts),
            "--out",
            str(out),
            "--machines",
            "2",
            "--epochs",
            "500",
            "--batch-size",
            "100",
            "--timeout",
            "240",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = out / "logs" / "m1-trainer0.log"
        deadline = time.monotonic() + 180
        while not (log.exists() and "epoch 2/" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        victims = [
            p for p in run_processes(out) if p.environ().get("RUDDER_PROCESS") == "m1-trainer0"
        ]
        assert len(victims) == 1
        victims[0].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        stdout, _ = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "m1-trainer0" in stdout and "SIGKILL" in stdout
    assert stopped_in < 60
    assert run_processes(out) == []
    assert json.loads((out / "summary.json").read_text())["ok"] is False
