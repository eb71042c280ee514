"""The numbers a run reports: ``summary.json`` from the trainers' results and the run report.

Epoch time is the slowest trainer's time per epoch (DDP keeps trainers in step), averaged
over the last 80% of epochs so start-up effects (kernel loading, an empty buffer) stay out.
Rows and bytes fetched are summed over trainers and averaged per epoch. Faults (sidecar
restarts and outages, requests dropped and minibatches decided without the agent) are in
``faults`` (:func:`fault_record`). The file is written whole or not at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rudder.files import atomic_write_text

STEADY_FRACTION = 0.8


def steady_epochs(n: int) -> slice:
    """The epochs that count: the last 80% (at least one)."""
    return slice(n - max(1, math.ceil(STEADY_FRACTION * n)), n)


def _trainer_results(out: Path) -> list[dict]:
    files = sorted((out / "trainers").glob("rank-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise ValueError(
            f"{out / 'trainers'}: no trainer results; the trainers wrote nothing (a --script "
            "must call BufferedFeatures.close(), which writes them)"
        )
    return [json.loads(f.read_text()) for f in files]


def summarize(cfg, wc, report, out: Path, *, run_id: str, cluster_mode: str) -> dict:
    """Combine per-trainer results and the supervisor's report into the run summary."""
    trainers = _trainer_results(out)
    n_epochs = min(len(t["epochs"]) for t in trainers)
    per_epoch = [max(t["epochs"][e]["time_s"] for t in trainers) for e in range(n_epochs)]
    steady = steady_epochs(n_epochs)

    def epoch_sum(key: str) -> list[int]:
        return [sum(t["epochs"][e][key] for t in trainers) for e in range(n_epochs)]

    rows = epoch_sum("rows_fetched")
    remote = sum(t["totals"]["remote_inputs"] for t in trainers)
    hits = sum(t["totals"]["hits"] for t in trainers)
    times = {
        k: sum(t["time_s"][k] for t in trainers) / len(trainers) / n_epochs
        for k in trainers[0]["time_s"]
    }
    verification = [t["verification"] for t in trainers if t.get("verification")]
    return {
        "ok": True,
        "run_id": run_id,
        "policy": trainers[0]["policy"],
        "decider": trainers[0]["decider"],
        "buffer_fraction": cfg.options.buffer_fraction,
        "scenario": cfg.options.scenario,
        "machines": cfg.machines,
        "trainers_per_machine": cfg.trainers,
        "cluster_mode": cluster_mode,
        "bandwidth": cfg.bandwidth,
        "overlap": wc.options.use_overlap,
        "epochs": n_epochs,
        "batch_size": cfg.options.batch_size,
        "fanouts": list(cfg.options.fanouts),
        "epoch_time_s": sum(per_epoch[steady]) / len(per_epoch[steady]),
        "epoch_times_s": per_epoch,
        "rows_fetched_per_epoch": sum(rows[steady]) / len(rows[steady]),
        "bytes_fetched_per_epoch": sum(epoch_sum("bytes_fetched")[steady]) / len(rows[steady]),
        "remote_inputs_per_epoch": sum(epoch_sum("remote_inputs")[steady]) / len(rows[steady]),
        "hit_rate": hits / remote if remote else 0.0,
        "replacements": sum(t["totals"]["replacements"] for t in trainers),
        "decisions": sum(t.get("decisions", 0) for t in trainers),
        "replace_decisions": sum(t.get("replace_decisions", 0) for t in trainers),
        "replacement_interval": _mean(t.get("replacement_interval") for t in trainers),
        "rows_replaced": sum(t["totals"]["rows_replaced"] for t in trainers),
        "prefill_rows": sum(t["totals"]["prefill_rows"] for t in trainers),
        "time_per_epoch_s": {  # mean per trainer per epoch, all epochs
            "sampling": times["sample_s"],
            "pull": times["pull_s"],
            "hook": times["hook_s"],
            "labels": times["label_s"],
            "waiting_for_prefetch": times["wait_s"],
            "compute": times["compute_s"],
        },
        "startup_s": max(t["startup_s"] for t in trainers),
        "verification": {
            "minibatches": sum(v["minibatches"] for v in verification),
            "mismatches": sum(v["mismatches"] for v in verification),
            "hits_checked": sum(v["hits_checked"] for v in verification),
        }
        if verification
        else None,
        "peak_rss_bytes": {p.name: p.peak_rss_bytes for p in report.processes},
        "duration_s": report.duration_s,
        "trainers": trainers,
    }


def _mean(values) -> float | None:
    vals = [v for v in values if v]
    return sum(vals) / len(vals) if vals else None


def agent_totals(agent: dict | None) -> dict:
    """Valid %, Pass@1 and latency over all trainers, from the sidecars' statistics."""
    if not agent:
        return {}
    stats = [a["agent"] for a in agent.values() if a.get("agent")]
    n = sum(s["decisions"] for s in stats)
    ev = sum(s["evaluated"] for s in stats)

    def weighted(key: str, weight: str, total: int) -> float | None:
        parts = [(s[key], s[weight]) for s in stats if s.get(key) is not None and s[weight]]
        return sum(v * w for v, w in parts) / total if parts and total else None

    return {
        "agent_decisions": n,
        "evaluated": ev,
        "valid_pct": weighted("valid_pct", "decisions", n),
        "replace_pct": weighted("replace_pct", "decisions", n),
        "pass_at_1_hits": weighted("pass_at_1_hits", "evaluated", ev),
        "pass_at_1_comm": weighted("pass_at_1_comm", "evaluated", ev),
        # What constant predictors (and the heuristic) score on the same decisions.
        **{
            key: weighted(key, "evaluated", ev)
            for key in sorted({k for s in stats for k in s if k.startswith("baseline_")})
        },
        "latency_p50_s": _mean(s.get("latency_p50_s") for s in stats),
    }


def best_constant(agent: dict) -> float | None:
    """The Pass@1 %-hits of the better constant predictor (always replace, always skip)."""
    vals = [agent.get(f"baseline_{b}_hits") for b in ("replace", "skip")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


# What each trainer's agent client counted about the agent's absence (AgentClient.counters).
_CLIENT_FAULTS = (
    "unsent",
    "dropped",
    "timeouts",
    "reconnects",
    "outages",
    "outage_s",
    "fallback_minibatches",
    "offline",
)


def fault_record(
    sidecars: list[dict] | None, trainers: list[dict], trainers_per_machine: int
) -> dict:
    """What went wrong with the agent during a run, from both ends.

    ``sidecars`` is :meth:`AgentSidecars.faults` (restarts, outages as the launcher saw them:
    a death until the successor answered a ping); each trainer's client counters say what
    the trainer lived through (also a stopped, not dead, sidecar): requests dropped for want
    of an agent (``unsent``; ``dropped`` adds the async mode's by-design stale-request drops),
    outages, and the minibatches decided by the fallback (skip) while it was unreachable.
    """
    clients = {t["rank"]: t["agent"] for t in trainers if t.get("agent")}
    per_trainer = {
        str(rank): {k: c.get(k) for k in _CLIENT_FAULTS} for rank, c in sorted(clients.items())
    }
    sidecar_rows = []
    for s in sidecars or []:
        mine = [
            c for rank, c in clients.items() if rank // max(trainers_per_machine, 1) == s["index"]
        ]
        sidecar_rows.append(
            {**s, "fallback_minibatches": sum(c.get("fallback_minibatches", 0) for c in mine)}
        )
    return {
        "sidecar_restarts": sum(s["restarts"] for s in sidecar_rows),
        "sidecar_outages": sum(len(s["outages"]) for s in sidecar_rows),
        "dropped_requests": sum(c.get("unsent", 0) for c in clients.values()),
        # Not a fault: async mode drops requests made while the agent thinks (the paper's design).
        "stale_requests_dropped": sum(
            c.get("dropped", 0) - c.get("unsent", 0) for c in clients.values()
        ),
        "fallback_minibatches": sum(c.get("fallback_minibatches", 0) for c in clients.values()),
        "sidecars": sidecar_rows,
        "trainers": per_trainer,
    }


def write_summary(out: Path, summary: dict) -> Path:
    """``out/summary.json``, whole or not at all (OutputError if it cannot be written)."""
    return atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def load_summary(run_dir: str | Path) -> dict:
    """A run's summary (``run_dir`` or its ``summary.json``), with a clear error if missing."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such run summary; run `rudder train ... --out DIR` first")
    summary = json.loads(path.read_text())
    if not summary.get("ok"):
        raise ValueError(f"{path}: that run failed ({summary.get('reason', 'unknown reason')})")
    return summary


def comparison_rows(summaries: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
    """A side-by-side table; the first run is the reference for speed-up and communication."""
    ref = summaries[0][1]
    headers = [
        "run",
        "policy",
        "decider",
        "epoch_s",
        "speedup",
        "rows/epoch",
        "comm_vs_ref",
        "hit_%",
        "decisions",
        "interval",
        "valid_%",
        "pass@1_hits",
        "const_pass@1",  # the better constant predictor's on the same decisions
        "latency_s",
    ]
    rows = []
    for name, s in summaries:
        a = agent_totals(s.get("agent"))
        rows.append(
            [
                name,
                s["policy"],
                s["decider"],
                s["epoch_time_s"],
                ref["epoch_time_s"] / s["epoch_time_s"] if s["epoch_time_s"] else None,
                round(s["rows_fetched_per_epoch"]),
                s["rows_fetched_per_epoch"] / ref["rows_fetched_per_epoch"]
                if ref["rows_fetched_per_epoch"]
                else None,
                100 * s["hit_rate"],
                s.get("decisions"),
                s.get("replacement_interval"),
                a.get("valid_pct"),
                a.get("pass_at_1_hits"),
                best_constant(a),
                a.get("latency_p50_s"),
            ]
        )
    return headers, rows
