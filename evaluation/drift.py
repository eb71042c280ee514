"""The drift study's numbers: the drift measure of a run's traces, and its workload phases.

A run of the drift study (the drift graph, or any scenario but stationary) keeps, besides its
replays, the drift measure (:func:`rudder.trainer_hooks.drift.measure_drift`) of trainer 0's
trace at each buffer size it is replayed at: the gap between ``best-static`` and ``belady``,
the lag overlaps, the verdict, the bursts; for a `none` run also the overlap profile (what the
report plots). The evaluation passes of the trace (``AccessTrace.phases()``) are kept as
minibatch spans, since most runs' traces are deleted once replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from rudder.evaluation.replays import fraction_key
from rudder.trainer_hooks.drift import measure_drift
from rudder.trainer_hooks.trace import PHASES, AccessTrace

log = logging.getLogger(__name__)

EVAL = PHASES.index("eval")


def eval_spans(trace: AccessTrace) -> list[list[int]]:
    """The ``[first, last]`` minibatches (inclusive) of each evaluation pass of ``trace``."""
    low = np.zeros(trace.num_minibatches + 2, dtype=np.int8)
    low[1:-1] = trace.phases() == EVAL
    edges = np.flatnonzero(np.diff(low))
    return [[int(a), int(b) - 1] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def measure(
    traces: Sequence[AccessTrace], fractions: Sequence[float], window: int, *, profile: bool
) -> dict | None:
    """The drift measure of trainer 0's trace at each of ``fractions``; None without traces.

    ``profile``: also keep the overlap profile (``overlap_profile``: one value per minibatch,
    4 decimals; it does not depend on the buffer size).
    """
    if not traces:
        return None
    trace = next((t for t in traces if t.meta.trainer == 0), traces[0])
    out: dict = {
        "trainer": trace.meta.trainer,
        "minibatches": trace.num_minibatches,
        "window": window,
        "eval_spans": eval_spans(trace),
        "by_buffer": {},
    }
    for f in fractions:
        try:
            report = measure_drift(trace, f, window=window)
        except ValueError as e:  # e.g. one machine: no remote ids, nothing to buffer
            out["error"] = str(e)
            break
        out["by_buffer"][fraction_key(f)] = report.to_dict()
        if profile and "overlap_profile" not in out:
            out["overlap_profile"] = [
                None if np.isnan(v) else round(float(v), 4) for v in report.profile
            ]
    return out
