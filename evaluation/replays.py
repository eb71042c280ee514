"""Replays of a run's recorded access traces: the policies the run did not train with.

Every trainer's trace is replayed with each policy at each buffer size, and the totals are
summed over trainers, so they compare directly with the run's own totals: the same minibatches,
the same remote ids. Offline bounds (`best-static`, `belady`) need the whole trace; they exist
only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from rudder.trainer_hooks.metrics import Totals
from rudder.trainer_hooks.policies import PolicySpec, ScoredOptions
from rudder.trainer_hooks.replay import ReplayConfig, ReplayResult, context_for, replay
from rudder.trainer_hooks.trace import AccessTrace, find_traces, load_trace


def fraction_key(fraction: float) -> str:
    """How results are keyed by buffer size (JSON keys are strings): ``0.25`` -> ``"0.25"``."""
    return f"{fraction:g}"


def add_totals(into: dict, totals: Totals) -> dict:
    """Sum ``totals`` into a plain dict of the same fields."""
    for k, v in dataclasses.asdict(totals).items():
        into[k] = into.get(k, 0) + v
    return into


def load_all(trace_dir: Path) -> list[AccessTrace]:
    """Every trainer's trace in a run's ``trace`` directory."""
    return [load_trace(f) for f in find_traces(trace_dir)]


def replay_all(
    traces: Sequence[AccessTrace],
    fractions: Sequence[float],
    policies: Sequence[str],
    *,
    config: Callable[[float], ReplayConfig] | None = None,
    on_result: Callable[[AccessTrace, float, ReplayResult], None] | None = None,
) -> dict[str, dict[str, dict]]:
    """``{fraction: {policy: totals summed over trainers}}``.

    ``config(fraction)`` makes the replay config (default: the rudder policy's heuristic
    decider, synchronous); ``on_result`` sees each trainer's result.
    """
    make = config or (lambda f: ReplayConfig(buffer_fraction=f, scored=ScoredOptions()))
    specs = [PolicySpec.parse(p) for p in policies]
    out: dict[str, dict[str, dict]] = {fraction_key(f): {} for f in fractions}
    for trace in traces:
        ctx = context_for(trace, specs)
        for f in fractions:
            cfg = make(f)
            for spec in specs:
                r = replay(trace, spec, cfg, ctx)
                add_totals(out[fraction_key(f)].setdefault(str(spec), {}), r.totals)
                if on_result:
                    on_result(trace, f, r)
    return out
