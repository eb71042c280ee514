"""From run records to comparison rows: one row per variant in each (setting, buffer) block.

A *block* is what the paper compares side by side: one setting (machines, link, epochs, graph,
scenario) and one buffer size. `none` has no buffer; it sits in every block of its setting.
Repeats of a run are averaged (epoch time also gets its spread over repeats). Ratios to `none`
and `fixed` use the block's own `none` and `fixed` rows; ratios to `belady` and `best-static`
use the replays of the run's own traces (all epochs, summed over trainers), so they compare the
same minibatches.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from rudder.evaluation.replays import fraction_key
from rudder.launcher.summary import best_constant


@dataclass(frozen=True, slots=True, order=True)
class BlockKey:
    """A comparison block: one setting and one buffer size."""

    machines: int
    bandwidth: str  # "unshaped" when not shaped
    epochs: int
    buffer: float
    dataset: str = "main"  # the graph: "main" or "drift"
    scenario: str = "stationary"  # the workload (matrix.workload_slug)

    @property
    def drifts(self) -> bool:
        """A block of the drift study (the drift graph, or a scenario but stationary)."""
        return self.dataset != "main" or self.scenario != "stationary"

    @property
    def setting(self) -> tuple:
        """The block's setting, as :func:`setting_of` gives a run's."""
        return (self.machines, self.bandwidth, self.epochs, self.dataset, self.scenario)

    @property
    def label(self) -> str:
        text = (
            f"{self.machines} machines, {self.bandwidth}, {self.epochs} epochs, "
            f"buffer {self.buffer:.0%}"
        )
        return f"{self.dataset} graph, {self.scenario}: {text}" if self.drifts else text

    @property
    def slug(self) -> str:
        """The label as a file-name part."""
        text = f"m{self.machines}-{self.bandwidth}-e{self.epochs}-b{round(self.buffer * 100):02d}"
        return f"{self.dataset}-{self.scenario}-{text}" if self.drifts else text


@dataclass(slots=True)
class Row:
    """One variant (and agent mode) in one block, averaged over its repeats."""

    variant: str
    mode: str | None
    runs: int
    epoch_s: float
    epoch_spread_s: float | None  # standard deviation over repeats (None with one repeat)
    rows_per_epoch: float
    mb_per_epoch: float
    hit_pct: float
    rows_vs_belady: float | None
    rows_vs_best_static: float | None
    rows_vs_none_all: float | None  # all epochs, against `none` replayed on the same traces
    decisions: float
    replace_pct: float | None
    interval: float | None
    valid_pct: float | None
    pass_hits: float | None
    pass_comm: float | None
    pass_best_constant: float | None  # Pass@1 %-hits of the better constant predictor
    latency_s: float | None
    speedup_vs_none: float | None = None
    speedup_vs_fixed: float | None = None
    comm_vs_none: float | None = None
    comm_vs_fixed: float | None = None
    ids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.variant + (" (sync)" if self.mode == "sync" else "")


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _vs(rec: dict, fraction: float, policy: str) -> float | None:
    bound = rec["replay"].get(fraction_key(fraction), {}).get(policy, {}).get("rows_fetched")
    return rec["summary"]["totals"]["rows_fetched"] / bound if bound else None


def _row(records: list[dict], buffer: float) -> Row:
    first = records[0]["run"]
    s = [r["summary"] for r in records]
    epochs = [x["epoch_time_s"] for x in s]
    return Row(
        variant=first["variant"],
        mode=first["mode"],
        runs=len(records),
        epoch_s=statistics.fmean(epochs),
        epoch_spread_s=statistics.stdev(epochs) if len(epochs) > 1 else None,
        rows_per_epoch=statistics.fmean(x["rows_fetched_per_epoch"] for x in s),
        mb_per_epoch=statistics.fmean(x["bytes_fetched_per_epoch"] for x in s) / 2**20,
        hit_pct=100 * statistics.fmean(x["hit_rate"] for x in s),
        rows_vs_belady=_mean(_vs(r, buffer, "belady") for r in records),
        rows_vs_best_static=_mean(_vs(r, buffer, "best-static") for r in records),
        rows_vs_none_all=_mean(_vs(r, buffer, "none") for r in records),
        decisions=statistics.fmean(x.get("decisions") or 0 for x in s),
        replace_pct=_mean(x["agent"].get("replace_pct") for x in s),
        interval=_mean(x.get("replacement_interval") for x in s),
        valid_pct=_mean(x["agent"].get("valid_pct") for x in s),
        pass_hits=_mean(x["agent"].get("pass_at_1_hits") for x in s),
        pass_comm=_mean(x["agent"].get("pass_at_1_comm") for x in s),
        pass_best_constant=_mean(best_constant(x["agent"]) for x in s),
        latency_s=_mean(x["agent"].get("latency_p50_s") for x in s),
        ids=[r["run"]["id"] for r in records],
    )


def blocks(records: list[dict]) -> dict[BlockKey, list[Row]]:
    """Comparison rows of every block, `none` first, in matrix order otherwise."""
    ok = [r for r in records if r.get("ok")]
    buffers: dict[tuple, set[float]] = {}
    for r in ok:
        run = r["run"]
        if run["buffer"] is not None:
            buffers.setdefault(setting_of(run), set()).add(run["buffer"])
    out: dict[BlockKey, list[Row]] = {}
    for setting, sizes in sorted(buffers.items()):
        machines, bandwidth, epochs, dataset, scenario = setting
        for b in sorted(sizes):
            groups: dict[tuple, list[dict]] = {}
            for r in ok:
                run = r["run"]
                if setting_of(run) == setting and run["buffer"] in (None, b):
                    groups.setdefault((run["variant"], run["mode"]), []).append(r)
            rows = [_row(recs, b) for recs in groups.values()]
            rows.sort(key=lambda row: row.variant != "none")
            _relate(rows)
            out[BlockKey(machines, bandwidth, epochs, b, dataset, scenario)] = rows
    return out


def setting_of(run: dict) -> tuple:
    """A run record's setting: machines, link, epochs, graph, scenario (as in a BlockKey)."""
    return (
        run["machines"],
        run["bandwidth"] or "unshaped",
        run["epochs"],
        run.get("dataset", "main"),  # records from before the drift study
        run.get("scenario", "stationary"),
    )


def in_block(run: dict, key: BlockKey) -> bool:
    """Whether a run record belongs in ``key``'s block (`none` belongs at every buffer)."""
    return setting_of(run) == key.setting and run["buffer"] in (None, key.buffer)


def _relate(rows: list[Row]) -> None:
    none = next((r for r in rows if r.variant == "none"), None)
    fixed = next((r for r in rows if r.variant == "fixed"), None)
    for r in rows:
        if none:
            r.speedup_vs_none = none.epoch_s / r.epoch_s if r.epoch_s else None
            r.comm_vs_none = r.rows_per_epoch / none.rows_per_epoch if none.rows_per_epoch else None
        if fixed:
            r.speedup_vs_fixed = fixed.epoch_s / r.epoch_s if r.epoch_s else None
            r.comm_vs_fixed = (
                r.rows_per_epoch / fixed.rows_per_epoch if fixed.rows_per_epoch else None
            )


def replayed(records: list[dict], key: BlockKey, policies: Iterable[str]) -> dict[str, dict]:
    """Replayed policies in a block, mean over its runs: rows relative to `none` and %-hits.

    Both come from replays of the same traces (all epochs), so they compare like with like.
    """
    out = {}
    recs = [r for r in records if r.get("ok") and in_block(r["run"], key)]
    for p in policies:
        vals = [
            (r["replay"][fraction_key(key.buffer)][p], r)
            for r in recs
            if p in r["replay"].get(fraction_key(key.buffer), {})
        ]
        if not vals:
            continue
        out[p] = {
            "rows_vs_none": statistics.fmean(
                v["rows_fetched"] / r["replay"][fraction_key(key.buffer)]["none"]["rows_fetched"]
                for v, r in vals
            ),
            "hit_pct": 100
            * statistics.fmean(
                v["hits"] / v["remote_inputs"] if v["remote_inputs"] else 0 for v, _ in vals
            ),
            "runs": len(vals),
        }
    return out
