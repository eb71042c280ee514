"""The live view reads what trainers and sidecars write, as they write it.

A run directory is grown by hand from a recorded metrics trace (a real DistDGL run's
records) and a decisions log; the bar's figures and the TensorBoard scalars are checked
against the records, and the event files are read back with TensorBoard's own reader.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rudder.launcher.live import JsonlTail, LiveSnapshot, RunWatcher, live_view

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
RECORDED = FIXTURES / "distdgl-locality-heuristic-rank-0.jsonl"


def _records() -> list[dict]:
    return [json.loads(line) for line in RECORDED.read_text().splitlines() if line.strip()]


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def _scalars(tb: Path, rank: int) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb / f"trainer-{rank}"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_a_tail_returns_only_complete_new_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # not there yet
    _append(path, '{"a": 1}\n{"a": 2')
    assert tail.read() == [{"a": 1}]
    _append(path, '}\nnot json\n[1]\n{"a": 3}\n')
    assert tail.read() == [{"a": 2}, {"a": 3}]
    assert tail.read() == []
    path.write_text('{"a": 9}\n')  # rewritten from the start
    assert tail.read() == [{"a": 9}]


def test_the_bar_follows_the_records_as_they_arrive(tmp_path):
    records = _records()
    metrics = tmp_path / "trainers" / "metrics-rank-0.jsonl"
    watcher = RunWatcher(tmp_path, epochs=3)
    assert watcher.poll().done == 0
    half = len(records) // 2
    for chunk in (records[:half], records[half:]):
        _append(metrics, "".join(json.dumps(r) + "\n" for r in chunk))
        snap = watcher.poll()
        last = chunk[-1]
        assert snap.done == records.index(last) + 1
        assert snap.total == last["total_minibatches"]
        assert snap.epoch == last["epoch"] + 1
        assert snap.hit_pct == pytest.approx(last["hit_pct_window"])
        assert snap.rows_per_minibatch == pytest.approx(last["rows_fetched_window"])
    decisions = tmp_path / "logs" / "agent-0.decisions.jsonl"
    log = [
        {"trainer": 0, "minibatch": 4, "decision": "replace", "latency_s": 2.0},
        {"trainer": 0, "minibatch": 4, "decision": "replace", "final_answer": True},
        {"trainer": 0, "minibatch": 9, "decision": "skip", "latency_s": 6.0},
        {"trainer": 0, "minibatch": 15, "decision": "skip", "latency_s": 3.0},
    ]
    _append(decisions, "".join(json.dumps(r) + "\n" for r in log))
    snap = watcher.poll()
    assert snap.decisions == 3 and snap.latency_p50_s == 3.0  # an answer's tail is not counted
    assert "decisions 3 (p50 3.0 s)" in snap.postfix()


def test_two_trainers_make_one_bar():
    snap = LiveSnapshot(
        done=10,
        total=40,
        epoch=2,
        epochs=5,
        hit_pct=41.26,
        rows_per_minibatch=1234.4,
        decisions=0,
        latency_p50_s=None,
    )
    assert snap.postfix() == "epoch 2/5, hits 41.3%, rows/mb 1,234"
    assert replace(snap, rounds=7).postfix().endswith("rows/mb 1,234, rounds 7")
    assert replace(snap, done=0).postfix().startswith("starting")


def test_tensorboard_scalars_are_the_records_with_steps_in_order(tmp_path):
    records = _records()
    for rank in (0, 1):
        src = FIXTURES / f"distdgl-locality-heuristic-rank-{rank}.jsonl"
        _append(tmp_path / "trainers" / f"metrics-rank-{rank}.jsonl", src.read_text())
    result = {"rank": 0, "epochs": [{"epoch": 0, "time_s": 1.5}, {"epoch": 1, "time_s": 1.25}]}
    (tmp_path / "trainers" / "rank-0.json").write_text(json.dumps(result))
    _append(
        tmp_path / "logs" / "agent-0.decisions.jsonl",
        json.dumps({"trainer": 0, "minibatch": 3, "decision": "replace", "latency_s": 0.5}) + "\n",
    )
    tb = tmp_path / "tb"
    watcher = RunWatcher(tmp_path, epochs=2, tensorboard=tb)
    watcher.poll()
    watcher.finish()

    s = _scalars(tb, 0)
    assert {
        "buffer/hit_pct",
        "buffer/hit_pct_window",
        "comm/rows_fetched",
        "buffer/replaced_rows",
        "buffer/replacement_rounds",
        "agent/decisions",
        "agent/latency_s",
        "agent/replace",
        "time/epoch_s",
    } <= set(s)
    steps = [step for step, _ in s["comm/rows_fetched"]]
    assert steps == sorted(set(steps)) and len(steps) == len(records)  # strictly increasing
    assert [v for _, v in s["comm/rows_fetched"]] == [r["rows_fetched"] for r in records]
    hit = [v for _, v in s["buffer/hit_pct"]]
    assert statistics.fmean(hit) == pytest.approx(statistics.fmean(r["hit_pct"] for r in records))
    assert s["time/epoch_s"] == [(0, 1.5), (1, 1.25)]
    assert s["agent/latency_s"] == [(3, 0.5)]
    assert set(_scalars(tb, 1)) >= {"buffer/hit_pct", "comm/rows_fetched"}


def test_the_view_never_starts_when_there_is_nothing_to_show(tmp_path):
    with live_view(tmp_path, 1, progress=False) as watcher:
        assert watcher is None


def test_the_bar_is_drawn_on_stderr_and_closed(tmp_path, capsys):
    records = _records()
    _append(
        tmp_path / "trainers" / "metrics-rank-0.jsonl",
        "".join(json.dumps(r) + "\n" for r in records),
    )
    with live_view(tmp_path, 3, progress=True, interval_s=0.05) as watcher:
        assert watcher is not None
    err = capsys.readouterr().err
    assert f"{len(records)}/{records[-1]['total_minibatches']}" in err
    assert "hits" in err and "rows/mb" in err
