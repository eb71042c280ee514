"""The report's figures (PNG): what is easier to see than to read.

- ``trajectory.png``: %-hits over minibatches for one trainer, replacement rounds marked, the
  LLM agent against a classifier (the paper's Fig. 20).
- ``epoch_time.png`` and ``communication.png``: every variant per block, with the spread over
  repeats and the offline bounds.
- ``buffer_sweep.png``: rows fetched against buffer size, replayed policies and live runs.
- ``ood.png``: %-hits of each decider on the graph it learnt from and on another.
Each function returns the file it wrote, or None when the results hold nothing to draw.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rudder.evaluation.tables import BlockKey, Row
from rudder.evaluation.variants import is_llm
from rudder.metrics_trace import read_metrics_trace
from rudder.protocol import Metrics

log = logging.getLogger(__name__)

DPI = 110


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (folders made) at the report's resolution, and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def run_metrics(run_dir: Path, rank: int = 0) -> list[Metrics]:
    """A run's metrics trace of trainer ``rank``; [] (nothing to draw) if it has none."""
    path = run_dir / "trainers" / f"metrics-rank-{rank}.jsonl"
    if not path.is_file():
        return []
    try:
        return read_metrics_trace(path)
    except ValueError as e:
        log.warning("trajectory: %s", e)
        return []


def trajectory(records: list[dict], runs_dir: Path, path: Path) -> Path | None:
    """%-hits of trainer 0 for the LLM run that decided most, and a classifier beside it."""
    ok = [r for r in records if r.get("ok")]
    llm = [r for r in ok if is_llm(r["run"]["decider"])]
    if not llm:
        return None

    def decided(rec: dict) -> int:
        return (rec.get("summary", {}).get("agent") or {}).get("agent_decisions") or 0

    ref = max(
        llm,
        key=lambda r: (decided(r), r["run"]["buffer"], r["run"]["epochs"], -r["run"]["machines"]),
    )["run"]
    axes_of = ("machines", "bandwidth", "epochs", "buffer", "repeat", "mode")
    same = [r["run"] for r in ok if all(r["run"][k] == ref[k] for k in axes_of)]
    order = ["mlp", "gbt", "rf", "lr", "heuristic"]
    other = sorted(
        (r for r in same if r["decider"] in order), key=lambda r: order.index(r["decider"])
    )
    shown = [ref, *other[:1]]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.6 * len(shown)), sharex=True)
    axes = [axes] if len(shown) == 1 else axes
    for ax, run in zip(axes, shown, strict=True):
        ms = run_metrics(runs_dir / run["id"])
        if not ms:
            continue
        x = [m.minibatch for m in ms]
        ax.plot(x, [m.hit_pct for m in ms], lw=0.8, color="0.6", label="%-hits")
        ax.plot(x, [m.hit_pct_window for m in ms], lw=1.6, label="%-hits (window)")
        rounds = [m.minibatch for m in ms if m.replaced > 0]
        for i, t in enumerate(rounds):
            ax.axvline(
                t, color="tab:red", lw=0.6, alpha=0.6, label="replacement" if i == 0 else None
            )
        ax.set_ylabel("%-hits")
        mode = " (sync)" if run["mode"] == "sync" else ""
        ax.set_title(
            f"{run['variant']}{mode}: {len(rounds)} replacement round(s), trainer 0", fontsize=10
        )
        ax.legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("minibatch")
    return save_figure(fig, path)


def _bars(ax, rows: list[Row], values, errors=None, ref_lines=()) -> None:
    labels = [r.label for r in rows]
    ax.bar(range(len(rows)), values, yerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    for y, name, color in ref_lines:
        if y is not None:
            ax.axhline(y, ls="--", lw=1, color=color, label=name)
    ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=8)


def per_block(
    blocks: dict[BlockKey, list[Row]], path: Path, what: str, bounds: dict | None = None
) -> Path | None:
    """One panel per block: epoch time (``what="epoch"``) or rows vs none (``"rows"``)."""
    if not blocks:
        return None
    n = len(blocks)
    cols = min(n, 2)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols,
        cols,
        figsize=(6.5 * cols, 3.6 * ((n + cols - 1) // cols)),
        squeeze=False,
    )
    for ax, (key, rows) in zip(axes.flat, blocks.items(), strict=False):
        if what == "epoch":
            _bars(ax, rows, [r.epoch_s for r in rows], [r.epoch_spread_s or 0 for r in rows])
            ax.set_ylabel("epoch time (s)")
        else:
            b = (bounds or {}).get(key, {})
            _bars(
                ax,
                rows,
                [r.rows_vs_none_all or 0 for r in rows],
                ref_lines=(
                    (b.get("best-static", {}).get("rows_vs_none"), "best-static", "tab:green"),
                    (b.get("belady", {}).get("rows_vs_none"), "belady", "tab:red"),
                ),
            )
            ax.set_ylabel("rows fetched / none (all epochs)")
            ax.legend(fontsize=8)
        ax.set_title(key.label, fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return save_figure(fig, path)


def sweep(results_sweep: dict | None, path: Path) -> Path | None:
    """Rows fetched (relative to none) against buffer size, per replayed policy."""
    if not results_sweep or "rows" not in results_sweep:
        return None
    rows = results_sweep["rows"]
    fractions = sorted(rows, key=float)
    policies = [p for p in next(iter(rows.values())) if p != "none"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for p in policies:
        ys = [rows[f][p]["rows_fetched"] / rows[f]["none"]["rows_fetched"] for f in fractions]
        style = "--" if p in ("belady", "best-static") else "-"
        ax.plot([100 * float(f) for f in fractions], ys, style, marker="o", ms=3, label=p)
    ax.set_xscale("log")
    ax.set_xlabel("buffer size (% of reachable remote nodes)")
    ax.set_ylabel("rows fetched / none")
    ax.set_title(f"buffer-size sweep (replay of {results_sweep['reference']})", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def ood(results_ood: dict | None, path: Path) -> Path | None:
    """%-hits of each decider on the seen and the unseen graph."""
    graphs = {
        k: v for k, v in (results_ood or {}).items() if isinstance(v, dict) and "deciders" in v
    }
    if not graphs:
        return None
    deciders = list(next(iter(graphs.values()))["deciders"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(graphs)
    for i, (name, g) in enumerate(graphs.items()):
        hits = [
            100
            * g["deciders"][d]["totals"]["hits"]
            / max(1, g["deciders"][d]["totals"]["remote_inputs"])
            for d in deciders
        ]
        ax.bar(
            [j + i * width for j in range(len(deciders))],
            hits,
            width,
            label=f"{name} ({g['graph']})",
        )
    ax.set_xticks([j + width * (len(graphs) - 1) / 2 for j in range(len(deciders))], deciders)
    ax.set_ylabel("%-hits")
    ax.set_title("deciders on the graph they learnt from (seen) and another (unseen)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
