"""The drift measure: overlap profile, lag overlaps, bursts, verdict, and `rudder trace info`."""

import json
import math

import numpy as np
import pytest

from rudder.cli.main import main
from rudder.trainer_hooks.drift import (
    Burst,
    find_bursts,
    lag_overlap,
    measure_drift,
    overlap_profile,
    sparkline,
    verdict,
)
from tests.conftest import make_trace, random_batches
from tests.integration.training_support import rudder


def phases(n_phases: int = 5, per_phase: int = 10, width: int = 100):
    """Disjoint phases: ids 0..99 for 10 minibatches, then 100..199 for 10, ..."""
    return [
        np.arange(p * width, (p + 1) * width) for p in range(n_phases) for _ in range(per_phase)
    ]


def burst_batches(before: int = 10, fresh: int = 3, after: int = 10):
    """Stationary minibatches (ids 0..99), ``fresh`` of never-seen ids, stationary again."""
    steady = np.arange(100)
    burst = [np.arange(100 * (k + 1), 100 * (k + 2)) for k in range(fresh)]
    return [steady] * before + burst + [steady] * after


def brute_profile(batches, window):
    sets = [set(b.tolist()) for b in batches]
    out = []
    for i, s in enumerate(sets):
        if not s:
            out.append(math.nan)
            continue
        seen = set().union(*sets[max(0, i - window) : i])
        out.append(len(s & seen) / len(s))
    return np.array(out)


def brute_lag(batches, lag):
    sets = [set(b.tolist()) for b in batches]
    vals = [len(sets[i] & sets[i - lag]) / len(sets[i]) for i in range(lag, len(sets)) if sets[i]]
    return float(np.mean(vals)) if vals else math.nan


# --- identical minibatches: nothing changes -------------------------------------------------


def test_identical_minibatches_overlap_fully_and_are_stationary():
    tr = make_trace([np.arange(100)] * 20)
    prof = overlap_profile(tr)
    assert prof[0] == 0.0
    np.testing.assert_array_equal(prof[1:], 1.0)
    assert lag_overlap(tr, (1, 10)) == {1: 1.0, 10: 1.0}

    r = measure_drift(tr, 0.25)
    assert r.capacity == 25
    assert r.gap == pytest.approx(1.0, abs=0.01)
    assert r.bursts == ()
    assert r.verdict == "stationary"
    assert r.profile_mean == 1.0 and r.profile_p10 == 1.0 and r.profile_p90 == 1.0


# --- disjoint phases: what is worth keeping changes every 10 minibatches ---------------------


def test_disjoint_phases_are_drifting():
    tr = make_trace(phases())
    lags = lag_overlap(tr, (1, 10, 100))
    assert lags[1] == pytest.approx(45 / 49)  # only the 4 phase changes miss
    assert lags[10] == 0.0
    assert math.isnan(lags[100])  # the trace has 50 minibatches

    prof = overlap_profile(tr, window=8)
    assert prof[[10, 20, 30, 40]].tolist() == [0.0] * 4  # each phase starts fresh
    np.testing.assert_array_equal(np.delete(prof, [0, 10, 20, 30, 40]), 1.0)

    r = measure_drift(tr, 0.2)  # room for one phase
    assert r.belady_rows == 500  # each phase fetched once
    assert r.best_static_rows == 100 + 4 * 10 * 100  # only phase 0 is ever kept
    assert r.gap > 3
    assert r.verdict == "drifting"
    assert "gap" in r.reason and "lag-1" in r.reason


# --- a burst of fresh ids in a stationary run --------------------------------------------------


def test_burst_found_at_the_right_minibatches():
    tr = make_trace(burst_batches())
    prof = overlap_profile(tr)
    assert prof[10:13].tolist() == [0.0, 0.0, 0.0]
    assert prof[13] == 1.0  # minibatches 5..9 are still within the window

    r = measure_drift(tr, 0.25)
    assert len(r.bursts) == 1
    b = r.bursts[0]
    assert (b.start, b.end, b.length, b.min_overlap) == (10, 12, 3, 0.0)
    assert r.to_dict()["bursts"] == [{"start": 10, "end": 12, "length": 3, "min_overlap": 0.0}]


def test_single_low_minibatch_is_not_a_burst_and_warm_up_is_ignored():
    prof = np.array([0.0, 0.1, 0.2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.0, 1, 1, 1, 1, 1, 1, 1])
    bursts, threshold = find_bursts(prof, window=3)
    assert bursts == []  # minibatch 12 is low but alone; 1..2 is the warm-up
    assert threshold < 0.5
    prof[13] = 0.0
    bursts, _ = find_bursts(prof, window=3)
    assert bursts == [Burst(12, 13, 0.0)]


def test_verdict_rule():
    far = {1: 0.50, 10: 0.49}
    assert verdict(far, 1.2, []) == "stationary"
    assert verdict(far, 1.6, []) == "drifting"
    assert verdict({1: 0.60, 10: 0.49}, 1.0, []) == "drifting"  # locality
    burst = [Burst(10, 12, 0.0)]
    assert verdict(far, 1.2, burst) == "stationary"  # clearly steady: bursts do not matter
    assert verdict(far, 1.55, burst) == "bursty"  # in between: bursts decide
    assert verdict(far, 1.55, []) == "stationary"
    assert verdict({1: 0.57, 10: 0.49}, 1.0, burst) == "bursty"
    assert verdict({1: 0.5, 10: math.nan}, 1.2, []) == "stationary"  # too short for lag 10


# --- against brute force ----------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 8])
def test_overlap_profile_matches_brute_force(rng, window):
    for _ in range(5):
        batches = random_batches(rng, 40, universe=60, max_len=25)
        tr = make_trace(batches)
        np.testing.assert_allclose(
            overlap_profile(tr, window), brute_profile(batches, window), equal_nan=True
        )


def test_lag_overlap_matches_brute_force(rng):
    for _ in range(5):
        batches = random_batches(rng, 40, universe=60, max_len=25)
        tr = make_trace(batches)
        got = lag_overlap(tr, (1, 2, 10, 39, 40))
        for lag, value in got.items():
            want = brute_lag(batches, lag)
            if math.isnan(want):
                assert math.isnan(value)
            else:
                assert value == pytest.approx(want)


def test_bad_inputs():
    tr = make_trace([np.arange(10)] * 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        measure_drift(tr, 1.5)
    with pytest.raises(ValueError, match="window"):
        overlap_profile(tr, 0)
    with pytest.raises(ValueError, match="no minibatches"):
        measure_drift(make_trace([]), 0.5)
    with pytest.raises(ValueError, match="no remote ids"):
        measure_drift(make_trace([np.empty(0, np.int64)] * 3), 0.5)


def test_report_dict_is_json_and_sparkline_has_its_width():
    r = measure_drift(make_trace(phases(n_phases=3, per_phase=40)), 0.25)
    d = json.loads(json.dumps(r.to_dict(include_profile=True)))
    assert d["lag_overlaps"]["100"] == 0.0  # minibatches 100..119 against phase 0
    assert len(d["profile"]["values"]) == 120 and d["profile"]["values"][0] == 0.0
    assert d["verdict"] == "drifting"
    line = sparkline(r.profile, 60)
    assert len(line) == 60 and set(line) <= set("▁▂▃▄▅▆▇█")
    assert sparkline(np.array([0.0, 1.0, np.nan]), 60) == "▁█ "


# --- `rudder trace info --buffer` ---------------------------------------------------------


@pytest.mark.integration
def test_cli_writes_the_drift_report(tmp_path):
    path = make_trace(phases()).save(tmp_path / "rank-0.npz")
    out = tmp_path / "out" / "drift.json"
    proc = rudder("trace", "info", "--trace", path, "--buffer", 0.25, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "best fixed buffer fetches" in proc.stdout and "Belady's rows" in proc.stdout
    assert "verdict: drifting" in proc.stdout
    d = json.loads(out.read_text())
    assert d["file"] == str(path)
    assert d["buffer_fraction"] == 0.25 and d["capacity"] == 125
    assert d["gap"] == pytest.approx(d["best_static_rows"] / d["belady_rows"]) and d["gap"] > 1
    assert set(d["lag_overlaps"]) == {"1", "10", "100"}
    assert d["lag_overlaps"]["1"] > d["lag_overlaps"]["10"]
    assert {"mean", "p10", "p90", "values"} <= set(d["profile"])
    assert d["verdict"] == "drifting" and d["bursts"] == []

    proc = rudder("trace", "info", "--trace", path, "--buffer", 2, check=False)
    assert proc.returncode == 2
    assert "--buffer" in proc.stderr and "[0, 1]" in proc.stderr


def test_cli_rank_selection_and_clear_errors(tmp_path, capsys):
    make_trace(burst_batches(), trainer=0).save(tmp_path / "rank-0.npz")
    make_trace(phases(), trainer=1).save(tmp_path / "rank-1.npz")
    assert main(["trace", "info", str(tmp_path), "--buffer", "0.25"]) == 2
    assert "--rank" in capsys.readouterr().err
    assert main(["trace", "info", "--trace", str(tmp_path), "--rank", "5", "--buffer", "0.5"]) == 2
    assert "no trace of rank 5" in capsys.readouterr().err

    assert main(["trace", "info", "--trace", str(tmp_path), "--rank", "0", "--buffer", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "bursts (overlap below" in text and "10-12" in text

    assert main(["trace", "info", str(tmp_path), "--rank", "1", "--buffer", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trainer"] == 1

    assert main(["trace", "info", str(tmp_path), "--json"]) == 0  # the summary, as before
    assert [r["trainer"] for r in json.loads(capsys.readouterr().out)] == [0, 1]

    make_trace([]).save(tmp_path / "empty" / "rank-0.npz")
    assert main(["trace", "info", str(tmp_path / "empty"), "--buffer", "0.5"]) == 2
    assert "no minibatches" in capsys.readouterr().err
