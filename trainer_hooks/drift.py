"""The drift measure: whether a workload has anything for a buffer policy to steer.

A decider that chooses *when* to replace buffered rows can only help if the rows worth keeping
change during the run. This module measures that from an access trace alone, in three ways:

- the **overlap profile**: for each minibatch, the fraction of its remote ids that some of the
  previous ``window`` minibatches also requested (:func:`overlap_profile`);
- the **lag overlaps**: the mean fraction of minibatch ``i``'s ids that minibatch ``i - lag``
  requested (:func:`lag_overlap`). With independently shuffled minibatches this does not depend
  on the lag; locality (neighbouring minibatches share ids) makes lag 1 larger than lag 10;
- the **gap** between the best buffer that never changes (``best-static``) and Belady's MIN
  (``belady``), the fewest rows any buffer of the same capacity can fetch. A gap near 1 means a
  fixed set of rows is already about as good as anything, so there is nothing to steer.

:func:`measure_drift` combines them into a :class:`DriftReport` with a one-word verdict. See
``docs/traces.md`` ("Is there anything to steer?") for the meaning of each number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rudder.trainer_hooks.policies.registry import PolicySpec
from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay
from rudder.trainer_hooks.trace import AccessTrace

VERDICT_LAGS = (1, 10)  # the lags the verdict compares
DEFAULT_LAGS = (1, 10, 100)
SPARK = "▁▂▃▄▅▆▇█"

# The verdict's thresholds (see DriftReport.verdict).
STATIONARY_LAG_DIFF = 0.05
STATIONARY_GAP = 1.5
DRIFTING_LAG_DIFF = 0.1
DRIFTING_GAP = 1.6
BURST_SIGMAS = 2.0
BURST_MIN_LENGTH = 2


def _batch_of(trace: AccessTrace) -> np.ndarray:
    """The minibatch of each position of ``trace.ids``."""
    sizes = np.diff(trace.offsets)
    return np.repeat(np.arange(sizes.shape[0], dtype=np.int64), sizes)


def _compact(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 0..distinct-1 (same order), so per-id arrays stay small."""
    return np.unique(ids, return_inverse=True)[1].reshape(-1).astype(np.int64)


def overlap_profile(trace: AccessTrace, window: int = 8) -> np.ndarray:
    """Per minibatch, the fraction of its remote ids seen in the previous ``window`` minibatches.

    With ``B_i`` the set of remote ids of minibatch ``i``, the profile is::

        p[i] = |{x in B_i : x in B_j for some j with max(0, i - window) <= j < i}| / |B_i|

    so ``p[0] = 0`` (nothing came before), and the first ``window`` minibatches look back over
    fewer than ``window`` predecessors (a warm-up). A minibatch with no remote ids has
    ``p[i] = nan`` (there is nothing to overlap). Returns float64 of length ``num_minibatches``.

    Cost O(total ids) after one ``np.unique``: each id's previous request is found by a stable
    sort of the compacted ids (ids within a minibatch are unique, so positions order requests).
    """
    if window < 1:
        raise ValueError(f"window is in minibatches and must be >= 1, got {window}")
    m = trace.num_minibatches
    sizes = np.diff(trace.offsets)
    batch = _batch_of(trace)
    inv = _compact(trace.ids)
    # Positions grouped by id, in trace order within an id: consecutive entries of one id are
    # consecutive requests of it, so each request's previous request is its predecessor here.
    order = np.argsort(inv, kind="stable")
    prev = np.full(inv.shape[0], -1, dtype=np.int64)
    same = inv[order[1:]] == inv[order[:-1]]
    prev[order[1:][same]] = batch[order[:-1][same]]
    seen = (prev >= 0) & (prev >= batch - window)
    hits = np.bincount(batch, weights=seen, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.where(sizes > 0, hits / np.maximum(sizes, 1), np.nan)
    return profile.astype(np.float64)


def lag_overlap(trace: AccessTrace, lags: Sequence[int] = DEFAULT_LAGS) -> dict[int, float]:
    """Mean over minibatches ``i`` of ``|B_i ∩ B_{i-lag}| / |B_i|``, for each lag.

    The mean runs over the minibatches ``i >= lag`` that have remote ids; a lag with no such
    minibatch (the trace is too short) maps to ``nan``.
    """
    m = trace.num_minibatches
    sizes = np.diff(trace.offsets)
    batch = _batch_of(trace)
    inv = _compact(trace.ids)
    keys = inv * max(1, m) + batch  # unique: ids within a minibatch are unique
    sorted_keys = np.sort(keys)
    out: dict[int, float] = {}
    for lag in lags:
        if lag < 1:
            raise ValueError(f"lags are in minibatches and must be >= 1, got {lag}")
        rows = batch >= lag
        q = keys[rows] - lag  # the same id, `lag` minibatches earlier
        j = np.searchsorted(sorted_keys, q)
        found = np.zeros(q.shape[0], dtype=bool)
        if sorted_keys.size:
            found = sorted_keys[np.minimum(j, sorted_keys.shape[0] - 1)] == q
        common = np.bincount(batch[rows], weights=found, minlength=m)
        mask = (np.arange(m) >= lag) & (sizes > 0)
        out[int(lag)] = float(np.mean(common[mask] / sizes[mask])) if mask.any() else math.nan
    return out


@dataclass(frozen=True, slots=True)
class Burst:
    """A run of consecutive minibatches whose overlap fell well below the trace's usual."""

    start: int  # first minibatch of the run
    end: int  # last minibatch of the run (inclusive)
    min_overlap: float

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "length": self.length,
            "min_overlap": self.min_overlap,
        }


def find_bursts(
    profile: np.ndarray,
    window: int,
    sigmas: float = BURST_SIGMAS,
    min_length: int = BURST_MIN_LENGTH,
) -> tuple[list[Burst], float]:
    """Maximal runs of ``>= min_length`` minibatches with overlap ``< mean - sigmas * std``.

    Mean and standard deviation are those of the profile over minibatches ``1..M-1`` (minibatch
    0 has no predecessor), ignoring empty minibatches. Runs are looked for only from minibatch
    ``window`` on, where every minibatch has a full window behind it: the warm-up's low overlap
    is an artefact of the measure, not of the workload. Returns the runs and the threshold.
    """
    values = profile[1:]
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [], math.nan
    threshold = float(values.mean() - sigmas * values.std())
    low = np.zeros(profile.shape[0] + 2, dtype=bool)
    low[1:-1] = np.nan_to_num(profile, nan=np.inf) < threshold
    low[1 : 1 + min(window, profile.shape[0])] = False
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    bursts = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= min_length:
            bursts.append(Burst(int(start), int(stop - 1), float(profile[start:stop].min())))
    return bursts, threshold


def verdict(lags: dict[int, float], gap: float, bursts: Sequence[Burst]) -> str:
    """The one-word verdict, by this rule (applied in order).

    1. **drifting** when ``gap >= 1.6`` or ``lag1 - lag10 >= 0.1``: the rows worth keeping
       change over the run (a changing buffer beats the best fixed one by a margin), or
       neighbouring minibatches share far more than distant ones (locality);
    2. **stationary** when ``|lag1 - lag10| < 0.05`` and ``gap < 1.5``: minibatches look alike
       whatever their distance and a fixed buffer is within 1.5x of Belady;
    3. **bursty** when the profile has bursts (runs of >= 2 minibatches with overlap below
       ``mean - 2 std``): an otherwise steady workload with episodes of fresh ids;
    4. otherwise **stationary**.

    A trace too short for lag 10 is judged by its gap and bursts alone.
    """
    return _judge(lags, gap, bursts)[0]


def _judge(lags: dict[int, float], gap: float, bursts: Sequence[Burst]) -> tuple[str, str]:
    lag1, lag10 = (lags.get(k, math.nan) for k in VERDICT_LAGS)
    known = not (math.isnan(lag1) or math.isnan(lag10))
    diff = lag1 - lag10 if known else 0.0
    said = f"gap {gap:.2f}" + (f", lag-1 minus lag-10 overlap {diff:+.3f}" if known else "")
    if gap >= DRIFTING_GAP or diff >= DRIFTING_LAG_DIFF:
        why = []
        if gap >= DRIFTING_GAP:
            why.append(f"gap {gap:.2f} >= {DRIFTING_GAP}")
        if diff >= DRIFTING_LAG_DIFF:
            why.append(f"lag-1 overlap exceeds lag-10 by {diff:.3f} >= {DRIFTING_LAG_DIFF}")
        return "drifting", "; ".join(why)
    if abs(diff) < STATIONARY_LAG_DIFF and gap < STATIONARY_GAP:
        return "stationary", (
            f"{said}: near and far minibatches overlap alike and a fixed buffer is within "
            f"{STATIONARY_GAP}x of Belady"
        )
    if bursts:
        return "bursty", f"{said}; {len(bursts)} burst(s) of fresh ids"
    return "stationary", f"{said}; no bursts"


def _nan_none(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Whether one trace has anything to steer, at one buffer size (see :func:`verdict`)."""

    trainer: int
    minibatches: int
    buffer_fraction: float
    capacity: int  # buffer rows at that fraction
    best_static_rows: int  # rows fetched by the best buffer that never changes
    belady_rows: int  # the fewest rows any buffer of this capacity fetches
    gap: float  # best_static_rows / belady_rows (>= 1)
    lag_overlaps: dict[int, float]  # lag -> mean |B_i ∩ B_{i-lag}| / |B_i|
    window: int  # the profile's look-back, in minibatches
    profile_mean: float
    profile_std: float
    profile_p10: float
    profile_p90: float
    burst_threshold: float  # profile values below this are low (mean - 2 std)
    bursts: tuple[Burst, ...]
    verdict: str  # "stationary", "drifting" or "bursty" (see :func:`verdict`)
    reason: str  # the verdict's numbers, in words
    profile: np.ndarray = field(repr=False, compare=False)

    def to_dict(self, include_profile: bool = False) -> dict:
        d = {
            "trainer": self.trainer,
            "minibatches": self.minibatches,
            "buffer_fraction": self.buffer_fraction,
            "capacity": self.capacity,
            "best_static_rows": self.best_static_rows,
            "belady_rows": self.belady_rows,
            "gap": self.gap,
            "lag_overlaps": {str(k): _nan_none(v) for k, v in self.lag_overlaps.items()},
            "window": self.window,
            "profile": {
                "mean": _nan_none(self.profile_mean),
                "std": _nan_none(self.profile_std),
                "p10": _nan_none(self.profile_p10),
                "p90": _nan_none(self.profile_p90),
                "burst_threshold": _nan_none(self.burst_threshold),
            },
            "bursts": [b.to_dict() for b in self.bursts],
            "verdict": self.verdict,
            "reason": self.reason,
        }
        if include_profile:
            d["profile"]["values"] = [_nan_none(float(v)) for v in self.profile]
        return d


def measure_drift(
    trace: AccessTrace,
    buffer_fraction: float,
    window: int = 8,
    lags: Sequence[int] = DEFAULT_LAGS,
) -> DriftReport:
    """Replay ``best-static`` and ``belady`` at ``buffer_fraction`` and profile the overlap."""
    if not 0.0 <= buffer_fraction <= 1.0:
        raise ValueError(f"buffer fraction must lie in [0, 1], got {buffer_fraction}")
    if trace.num_minibatches == 0:
        raise ValueError("the trace has no minibatches: nothing to measure")
    if trace.ids.shape[0] == 0:
        raise ValueError("the trace requested no remote ids: there is nothing to buffer")
    lags = tuple(sorted({*VERDICT_LAGS, *(int(k) for k in lags)}))

    specs = [PolicySpec.parse(p) for p in ("best-static", "belady")]
    ctx = context_for(trace, specs)
    config = ReplayConfig(buffer_fraction=buffer_fraction)
    rows = {s.name: replay(trace, s, config, ctx).totals.rows_fetched for s in specs}
    best_static, belady = int(rows["best-static"]), int(rows["belady"])

    profile = overlap_profile(trace, window)
    overlaps = lag_overlap(trace, lags)
    bursts, threshold = find_bursts(profile, window)
    values = profile[1:]
    values = values[~np.isnan(values)]
    if values.size:
        mean, std = float(values.mean()), float(values.std())
        p10, p90 = (float(v) for v in np.percentile(values, [10, 90]))
    else:
        mean = std = p10 = p90 = math.nan
    gap = best_static / belady if belady else 1.0
    word, reason = _judge(overlaps, gap, bursts)
    return DriftReport(
        trainer=trace.meta.trainer,
        minibatches=trace.num_minibatches,
        buffer_fraction=buffer_fraction,
        capacity=trace.meta.capacity(buffer_fraction),
        best_static_rows=best_static,
        belady_rows=belady,
        gap=gap,
        lag_overlaps=overlaps,
        window=window,
        profile_mean=mean,
        profile_std=std,
        profile_p10=p10,
        profile_p90=p90,
        burst_threshold=threshold,
        bursts=tuple(bursts),
        verdict=word,
        reason=reason,
        profile=profile,
    )


def sparkline(profile: np.ndarray, width: int = 60) -> str:
    """The profile as ``width`` characters of ``▁..█`` on a fixed 0..1 scale.

    Each character averages a run of consecutive minibatches (one per character when there are
    fewer than ``width``); a column of empty minibatches only prints as a space.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    n = profile.shape[0]
    if n == 0:
        return ""
    chars = []
    for col in np.array_split(np.asarray(profile, dtype=np.float64), min(width, n)):
        col = col[~np.isnan(col)]
        if col.size == 0:
            chars.append(" ")
            continue
        level = int(np.clip(col.mean(), 0.0, 1.0) * len(SPARK))
        chars.append(SPARK[min(level, len(SPARK) - 1)])
    return "".join(chars)
