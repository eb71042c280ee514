"""The `rudder` command as a user runs it: real processes, real files."""

import json
import subprocess
import sys

import pytest

from rudder.metrics_trace import read_metrics_trace

pytestmark = pytest.mark.integration

REQUIRED = {
    "policy",
    "decider",
    "remote_inputs",
    "hits",
    "rows_fetched",
    "hit_rate",
    "replacements",
}


def rudder(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "rudder", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"rudder {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    rudder(
        "-q",
        "trace",
        "synth",
        "--nodes",
        4000,
        "--parts",
        2,
        "--epochs",
        3,
        "--batch-size",
        100,
        "--train-fraction",
        0.2,
        "--out",
        out,
    )
    return out


def test_help_imports_no_heavy_modules():
    code = (
        "import sys\nfrom rudder.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'dgl', 'numba', 'zmq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")


def test_synth_writes_one_trace_per_trainer(trace_dir):
    assert sorted(p.name for p in trace_dir.iterdir()) == ["rank-0.npz", "rank-1.npz"]
    info = json.loads(rudder("trace", "info", trace_dir, "--json").stdout)
    assert [r["trainer"] for r in info] == [0, 1]
    assert all(r["remote_ids"] > 0 and r["minibatches"] > 0 for r in info)


def test_replay_all_reports_every_policy_against_belady(trace_dir, tmp_path):
    out = tmp_path / "r.json"
    proc = rudder(
        "replay", "--trace", trace_dir, "--policy", "all", "--buffer", 0.25, "--json", out
    )
    assert "vs_belady" in proc.stdout and "belady" in proc.stdout
    report = json.loads(out.read_text())
    results = {r["policy"]: r for r in report["results"]}
    assert set(results) == {
        "none",
        "static",
        "fixed",
        "periodic",
        "lru",
        "lfu",
        "s3fifo",
        "rudder",
        "belady",
        "best-static",
        "infinite",
    }
    for r in results.values():
        assert set(r) >= REQUIRED
        assert r["hit_rate"] == pytest.approx(r["hits"] / r["remote_inputs"])
        if r["policy"] != "infinite":
            assert r["rows_fetched"] >= results["belady"]["rows_fetched"]
    assert results["none"]["hits"] == 0
    assert results["belady"]["rows_vs_belady"] == 1.0
    assert results["rudder"]["decider"] == "heuristic"


def test_replay_writes_the_metrics_trace(trace_dir, tmp_path):
    out = tmp_path / "m.jsonl"
    rudder(
        "-q",
        "replay",
        "--trace",
        trace_dir,
        "--rank",
        1,
        "--policy",
        "rudder",
        "--buffer",
        0.05,
        "--latency",
        2,
        "--metrics-out",
        out,
    )
    records = read_metrics_trace(out)
    assert [m.minibatch for m in records] == list(range(len(records)))
    assert all(m.trainer == 1 for m in records)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "mru"], "unknown policy"),
        (["--decider", "sometimes"], "unknown decider"),
        (["--rank", 7], "no trace of trainer rank 7"),
    ],
)
def test_bad_arguments_fail_cleanly(trace_dir, args, message):
    proc = rudder("replay", "--trace", trace_dir, "--buffer", 0.1, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_truncated_trace_fails_cleanly(trace_dir, tmp_path):
    bad = tmp_path / "rank-0.npz"
    data = (trace_dir / "rank-0.npz").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    proc = rudder("replay", "--trace", bad, "--buffer", 0.1, check=False)
    assert proc.returncode == 2
    assert "truncated or corrupt" in proc.stderr and "Traceback" not in proc.stderr
    proc = rudder("replay", "--trace", tmp_path / "missing", "--buffer", 0.1, check=False)
    assert proc.returncode == 2 and "no such trace" in proc.stderr
