"""Observed effects of a decision, and Pass@1: did the predicted direction come true.

A decision made on the metrics of minibatch i *lands* at the next minibatch the trainer
reports, j (a round it asked for ran there; its rows serve hits from j + 1). Its effect is read
from the trainer's own windowed figures (``W = metrics.window`` minibatches): *before* is the
window ending at j, *after* the window ending at the first reported minibatch k >= j + W, which
is exactly j+1 .. j+W when the agent saw minibatch j + W. Comparing one minibatch with the next
(what Pass@1 did before) mostly measures sampling noise once the buffer is full, so a constant
predictor scored as well as any decider; a window average does not.

A change counts as "stagnant" unless it leaves the noise band: twice the standard deviation of
the difference of two W-minibatch means, ``2 * sigma * sqrt(2 / W)``, where sigma is the
minibatch-to-minibatch spread measured on the trainer's recent metrics (each minibatch's figure
around its window's). Communication uses the relative spread of rows fetched the same way.

Every score is shown beside what constant predictors get on the same decisions: always
"increase" (what a replace implies: %-hits up, communication down), always "stagnant" (what a
skip implies) and the heuristic decider's implied prediction on the same metrics. A Pass@1
that does not beat them has learnt nothing.
"""

from __future__ import annotations

import math

from rudder.decisions import implied_effects

MIN_HIT_BAND_PP = 0.5  # the %-hits band never narrows below this (percentage points)
MIN_COMM_BAND = 0.02  # ... nor the communication band below 2%
BASELINES = ("replace", "skip", "heuristic")  # constant predictors, and the heuristic's


def direction(change: float, band: float) -> str:
    if change > band:
        return "increase"
    if change < -band:
        return "decrease"
    return "stagnant"


def _spread(values: list[float], window: int) -> float:
    """Minibatch-to-minibatch standard deviation from deviations around the window mean."""
    if len(values) < 3:
        return 0.0
    # Plain floats: statistics.pstdev's exact fractions took ~0.2 ms of a 0.9 ms rule decision.
    mean = math.fsum(values) / len(values)
    pstdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    # A value's deviation from a mean that includes it shrinks by sqrt(1 - 1/W).
    return pstdev / math.sqrt(max(1.0 - 1.0 / window, 1.0 / window))


def noise_bands(recent: list[dict], window: int) -> tuple[float, float]:
    """The stagnant bands (%-hits in points, communication relative) from recent metrics."""
    filled = [r for r in recent if r["minibatch"] + 1 >= window]
    hit_dev = [r["hit_pct"] - r["hit_pct_window"] for r in filled]
    comm_dev = [
        r["rows_fetched"] / r["rows_fetched_window"] - 1.0
        for r in filled
        if r["rows_fetched_window"] > 0
    ]
    k = 2.0 * math.sqrt(2.0 / window)
    return (
        max(MIN_HIT_BAND_PP, k * _spread(hit_dev, window)),
        max(MIN_COMM_BAND, k * _spread(comm_dev, window)),
    )


def snapshot(metrics: dict) -> dict:
    """The windowed figures a decision is judged by, from one metrics record."""
    return {
        "minibatch": metrics["minibatch"],
        "hit_pct_window": metrics["hit_pct_window"],
        "rows_fetched_window": metrics["rows_fetched_window"],
    }


def window_of(metrics: dict) -> int:
    """The trainer's window W (1 for records that do not state one)."""
    return max(int(metrics.get("window") or 0), 1)


def observe(before: dict, after: dict, bands: tuple[float, float]) -> tuple[str, str]:
    """Directions of windowed %-hits and communication from ``before`` to ``after``."""
    hit = direction(after["hit_pct_window"] - before["hit_pct_window"], bands[0])
    rows_before = max(before["rows_fetched_window"], 1e-9)
    comm = direction((after["rows_fetched_window"] - rows_before) / rows_before, bands[1])
    return hit, comm


def evaluate(landed: dict, after: dict, bands: tuple[float, float]) -> dict:
    """The history record of a landed decision, now that ``after`` ends its window."""
    hit, comm = observe(landed["before"], after, bands)
    rec = {
        **landed,
        "after": snapshot(after),
        "bands": list(bands),
        "observed_hit_pct": hit,
        "observed_communication": comm,
        "pass_hit": hit == landed.get("expected_hit_pct"),
        "pass_comm": comm == landed.get("expected_communication"),
    }
    decisions = {"replace": "replace", "skip": "skip", "heuristic": landed.get("heuristic")}
    for name in BASELINES:
        exp_hit, exp_comm = implied_effects(decisions[name] or "skip")
        rec[f"baseline_{name}_hit"] = hit == exp_hit
        rec[f"baseline_{name}_comm"] = comm == exp_comm
    return rec


def history_line(rec: dict) -> str:
    """One evaluated decision, as the agent's prompt shows it (short: it is read every time)."""
    b, a = rec["before"], rec["after"]
    return (
        f"- {rec['decision']} at minibatch {rec['minibatch']} (you expected "
        f"{rec.get('expected_hit_pct') or '-'}): %-hits {b['hit_pct_window']:.0f} -> "
        f"{a['hit_pct_window']:.0f} {rec['observed_hit_pct']}, rows "
        f"{b['rows_fetched_window']:.0f} -> {a['rows_fetched_window']:.0f} "
        f"{rec['observed_communication']}"
    )
