"""`rudder bench --quick` end to end: real DistDGL runs, a real LLM (SmolLM2-135M behind the
embedded server), trained classifiers, replays, the studies, the drift study, REPORT.md and
plots."""

import json
import socket
import subprocess
import sys

import psutil
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    subprocess.run(
        [sys.executable, "-m", "rudder", "-q", "models", "fetch", MODEL], check=True, timeout=600
    )
    root = tmp_path_factory.mktemp("bench")
    config = root / "ci.toml"
    config.write_text(
        f"""
[llm]
model = "{MODEL}"
url = "http://127.0.0.1:{_free_port()}"
[ood]
deciders = ["heuristic", "lr", "llm"]
"""
    )
    out = root / "out"
    proc = _bench(config, out)
    return out, json.loads((out / "results.json").read_text()), proc


def _bench(config, out, *extra):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rudder",
            "bench",
            "--quick",
            "--config",
            config,
            "--out",
            out,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.timeout(1200)
def test_quick_bench_writes_a_complete_report(bench):
    out, results, proc = bench
    runs = results["runs"]
    assert [(r["run"]["variant"], r["run"]["dataset"]) for r in runs] == [
        ("none", "main"),
        ("none", "drift"),
        ("fixed", "main"),
        ("rudder:heuristic", "main"),
        ("rudder:lr", "main"),
        ("rudder:llm", "main"),
        ("static", "drift"),
        ("rudder:always", "drift"),
        ("rudder:heuristic", "drift"),
    ]
    assert all(r["ok"] for r in runs), [r.get("reason") for r in runs]
    assert "failed" not in results["classifiers"] and "lr" in results["classifiers"]
    assert results["finished"] and set(results["ood"]) == {"seen", "unseen"}
    text = (out / "REPORT.md").read_text()
    for section in ("## Targets", "## Side by side", "## Out of distribution", "## Failed runs"):
        assert section in text
    for name in ("epoch_time", "communication", "trajectory", "buffer_sweep", "ood"):
        assert (out / "plots" / f"{name}.png").is_file(), name
    assert "rudder-llm-async-r0: epoch" in proc.stdout + proc.stderr  # a line per run
    for d in ("heuristic", "lr", "llm"):
        assert results["ood"]["unseen"]["deciders"][d]["agent"]["valid_pct"] == 100.0


def test_the_drift_runs_are_reported_beside_their_bounds(bench):
    out, results, _ = bench
    drift = [r for r in results["runs"] if r["run"]["dataset"] == "drift"]
    assert {r["run"]["scenario"] for r in drift} == {"locality"}
    for r in drift:
        bounds = r["replay"]["0.25"]
        assert {"best-static", "belady"} <= set(bounds), r["run"]["id"]
        measure = r["drift"]["by_buffer"]["0.25"]
        assert measure["verdict"] in ("drifting", "stationary", "bursty")
        assert measure["best_static_rows"] >= measure["belady_rows"] > 0
    none = drift[0]
    assert none["run"]["buffer"] is None and len(none["drift"]["overlap_profile"]) > 10
    # the classifiers also learnt from the drift reference's traces
    assert (out / "classifiers" / "metrics" / none["run"]["id"]).is_dir()
    text = (out / "REPORT.md").read_text()
    section = text[text.index("## Drift") :]
    assert "### drift graph, locality: 2 machines" in section
    assert "Drift measure (trainer 0 of `drift-locality-" in section
    for row in ("| static |", "| rudder:always |", "| rudder:heuristic |"):
        assert row in section, row
    assert "| *best-static* (offline, replayed) |" in section
    assert "| *belady* (offline, replayed) |" in section
    assert "always and never rows differ by >= 15%" in text  # not measurable: no never run
    assert (out / "plots" / "drift_overlap.png").is_file()
    assert list((out / "plots").glob("drift-hits-drift-locality-*.png"))


def test_no_policy_fetches_fewer_rows_than_belady_and_none_never_hits(bench):
    _, results, _ = bench
    for r in results["runs"]:
        for fraction, policies in r["replay"].items():
            bound = policies["belady"]["rows_fetched"]
            for name, totals in policies.items():
                if name != "infinite":  # unbounded capacity: below belady by design
                    assert totals["rows_fetched"] >= bound, (r["run"]["id"], fraction, name)
            assert policies["none"]["hits"] == 0
        if r["run"]["buffer"] is not None:  # the live run, on its own traces
            live = r["summary"]["totals"]["rows_fetched"]
            assert live >= r["replay"][f"{r['run']['buffer']:g}"]["belady"]["rows_fetched"]
        else:
            assert r["summary"]["hit_rate"] == 0 and r["summary"]["totals"]["hits"] == 0
    for fraction, policies in results["sweep"]["rows"].items():
        bound = policies["belady"]["rows_fetched"]
        assert all(p["rows_fetched"] >= bound for p in policies.values()), fraction
    for graph in results["ood"].values():
        bound = graph["bounds"]["belady"]["rows_fetched"]
        assert all(d["totals"]["rows_fetched"] >= bound for d in graph["deciders"].values())


@pytest.mark.timeout(600)
def test_a_rerun_reuses_finished_runs_and_leaves_nothing_running(bench):
    out, results, _ = bench
    listing = _bench(out.parent / "ci.toml", out, "--dry-run").stdout
    assert "9 training runs" in listing
    _bench(out.parent / "ci.toml", out)  # the training runs are reused, the studies redone
    again = json.loads((out / "results.json").read_text())
    assert [r["wall_s"] for r in again["runs"]] == [r["wall_s"] for r in results["runs"]]
    assert again["started"] != results["started"]
    leftovers = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(out) in cmd or ("llm serve" in cmd and MODEL in cmd):
            leftovers.append(cmd)
    assert not leftovers
