"""One bench run: `rudder train` with the run's variant, then replays of its traces.

The outcome is a *record* (JSON): the run's axes, the numbers the report needs from its
summary, the replayed policies' totals, or why it failed. Records are written next to the run
(``bench.json``) so that a bench restarted on the same directory skips finished runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rudder.evaluation.drift import measure
from rudder.evaluation.matrix import Run
from rudder.evaluation.replays import load_all, replay_all
from rudder.launcher.summary import agent_totals

log = logging.getLogger(__name__)

RECORD = "bench.json"
LEGACY = {"dataset": "main", "scenario": "stationary", "workload": {"name": "stationary"}}


@dataclass(frozen=True, slots=True)
class TrainSetup:
    """What a run needs besides its axes: inputs, shared options, where the agent's models are."""

    partitions: Path
    out: Path
    batch_size: int
    fanouts: tuple[int, ...]
    trainers: int
    seed: int
    timeout_s: float
    classifier_dir: Path
    agent_options: dict  # llm_url, llm_model, prompt


def slim(summary: dict) -> dict:
    """The numbers of a run summary the report uses (summary.json keeps everything)."""
    keys = (
        "epoch_time_s",
        "epoch_times_s",
        "rows_fetched_per_epoch",
        "bytes_fetched_per_epoch",
        "remote_inputs_per_epoch",
        "hit_rate",
        "replacements",
        "decisions",
        "replace_decisions",
        "replacement_interval",
        "rows_replaced",
        "prefill_rows",
        "time_per_epoch_s",
        "startup_s",
        "duration_s",
        "cluster_mode",
    )
    out = {k: summary.get(k) for k in keys}
    trainers = summary.get("trainers") or []
    out["totals"] = {
        k: sum(t["totals"][k] for t in trainers)
        for k in ("minibatches", "remote_inputs", "hits", "rows_fetched", "bytes_fetched")
    }
    out["final_loss"] = [t.get("final_loss") for t in trainers]
    out["final_train_acc"] = [t["epochs"][-1].get("train_acc") for t in trainers if t["epochs"]]
    out["agent"] = agent_totals(summary.get("agent"))
    out["agent"]["replace_pct"] = (
        100 * summary["replace_decisions"] / summary["decisions"]
        if summary.get("decisions")
        else None
    )
    return out


def train(run: Run, setup: TrainSetup) -> dict:
    """Train the run and return its summary (raises on failure)."""
    from rudder.launcher.train import TrainConfig
    from rudder.launcher.train import run as train_run
    from rudder.trainer_hooks.distdgl.config import TrainingOptions

    workload = run.setting.workload
    options = TrainingOptions(
        epochs=run.setting.epochs,
        batch_size=setup.batch_size,
        fanouts=setup.fanouts,
        policy=run.variant.policy,
        decider=run.variant.train_decider(setup.classifier_dir),
        buffer_fraction=run.buffer if run.buffer is not None else 0.0,
        record_trace=True,
        seed=setup.seed + run.repeat,
        agent_mode=run.mode or "async",
        scenario=workload.name,
        eval_every=workload.eval_every,
        window=workload.window,
        window_step=workload.window_step,
    )
    cfg = TrainConfig(
        partitions=setup.partitions,
        out=setup.out,
        machines=run.setting.machines,
        trainers=setup.trainers,
        options=options,
        bandwidth=run.setting.bandwidth,
        timeout_s=setup.timeout_s,
        agent_options=setup.agent_options,
    )
    return train_run(cfg, on_event=lambda line: log.debug("%s", line))


def _failure(e: BaseException) -> dict:
    report = getattr(e, "report", None)
    if report is None:
        return {"reason": f"{type(e).__name__}: {e}"}
    return {
        "reason": report.reason,
        "failed": [
            {"process": p.name, "exit": p.describe_exit(), "log": p.log_path, "tail": p.log_tail}
            for p in report.failed()
        ],
    }


def execute(
    run: Run,
    setup: TrainSetup,
    *,
    fractions: list[float],
    policies: tuple[str, ...],
    keep_trace: bool,
    fingerprint: str,
    drift_window: int | None = None,
) -> dict:
    """Train, replay the traces at ``fractions``, write and return the record.

    ``drift_window``: also take the drift measure (``evaluation.drift``) with that look-back,
    with the overlap profile for a `none` run. A failure of the run is recorded, not raised
    (the bench goes on with the next run); Ctrl-C still stops everything.
    """
    t0 = time.perf_counter()
    record: dict = {"run": run.to_dict(), "ok": False, "fingerprint": fingerprint}
    try:
        summary = train(run, setup)
        record["summary"] = slim(summary)
        traces = load_all(setup.out / "trace")
        record["replay"] = replay_all(traces, fractions, ("none", *policies))
        if drift_window is not None:
            record["drift"] = measure(
                traces, fractions, drift_window, profile=not run.variant.buffered
            )
        record["ok"] = True
    except Exception as e:
        record.update(_failure(e))
        log.warning("run %s failed: %s", run.id, record["reason"])
    record["wall_s"] = time.perf_counter() - t0
    if record["ok"] and not keep_trace:
        shutil.rmtree(setup.out / "trace", ignore_errors=True)
    (setup.out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def finished(run: Run, out: Path, fingerprint: str) -> dict | None:
    """The record of an earlier successful run of ``run`` in ``out`` under the same config."""
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    old = {**LEGACY, **record.get("run", {})}  # records from before the drift study
    same = {k: v for k, v in old.items() if k != "groups"} == {
        k: v for k, v in run.to_dict().items() if k != "groups"
    }
    if record.get("ok") and same and record.get("fingerprint") == fingerprint:
        record["run"] = run.to_dict()  # group membership may have changed
        return record
    return None
