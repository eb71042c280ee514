"""Per-minibatch accounting, and the metrics a trainer reports to its decider.

:class:`Accounting` turns each minibatch's :class:`Plan` into a :class:`Metrics` record: the
paper's metrics (section 4.3) with the authors' accounting bugs fixed. Misses are counted on
every minibatch (replacement or not), replacement and prefill rows count as communication,
and %-hits are floats, windowed and cumulative.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rudder.protocol import Metrics

if TYPE_CHECKING:  # only for annotations: keeps this module (and deciders) free of numba
    from rudder.trainer_hooks.policies.base import Plan
    from rudder.trainer_hooks.round_outcome import RoundOutcome
    from rudder.trainer_hooks.round_preview import RoundPreview

DEFAULT_WINDOW = 8  # minibatches in the windowed %-hits and communication


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


@dataclass(slots=True)
class Totals:
    """Run totals of one trainer (what replay reports per policy)."""

    minibatches: int = 0
    remote_inputs: int = 0
    hits: int = 0
    misses: int = 0
    extra_rows: int = 0
    prefill_rows: int = 0
    rows_fetched: int = 0
    bytes_fetched: int = 0
    replacements: int = 0  # rounds that admitted at least one entry
    rows_replaced: int = 0  # entries admitted by rounds
    evicted: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over remote inputs, 0..1."""
        return self.hits / self.remote_inputs if self.remote_inputs else 0.0


@dataclass(slots=True)
class Accounting:
    """Accumulates plans into per-minibatch :class:`Metrics` and run :class:`Totals`."""

    trainer: int
    capacity: int
    row_bytes: int  # bytes of one feature row (feat_dim x itemsize)
    total_minibatches: int = 0
    window: int = DEFAULT_WINDOW
    totals: Totals = field(default_factory=Totals)
    _recent: deque = field(default_factory=deque)  # (hits, remote, rows), last 2 windows
    _last_round: int = -1
    _last_replaced: int = 0

    def record_prefill(self, plan: Plan) -> None:
        """Count rows pulled before training (they are communication too)."""
        self.totals.prefill_rows += plan.n_fetched
        self.totals.rows_fetched += plan.n_fetched
        self.totals.bytes_fetched += plan.n_fetched * self.row_bytes

    def record(
        self,
        plan: Plan,
        *,
        epoch: int = 0,
        local_inputs: int = 0,
        buffer_fill: int = 0,
        preview: RoundPreview | None = None,
        outcome: RoundOutcome | None = None,
        sample_s: float = 0.0,
        fetch_s: float = 0.0,
        compute_s: float = 0.0,
    ) -> Metrics:
        """Account one stepped minibatch and return its metrics."""
        tot = self.totals
        mb = tot.minibatches
        replaced = plan.n_admitted if plan.replaced else 0
        if replaced:
            self._last_round, self._last_replaced = mb, replaced
            tot.replacements += 1
            tot.rows_replaced += replaced
        tot.minibatches += 1
        tot.remote_inputs += plan.n_requested
        tot.hits += plan.n_hits
        tot.misses += plan.n_misses
        tot.extra_rows += plan.n_extra
        tot.rows_fetched += plan.n_fetched
        tot.bytes_fetched += plan.n_fetched * self.row_bytes
        tot.evicted += plan.evicted

        self._recent.append((plan.n_hits, plan.n_requested, plan.n_fetched))
        if len(self._recent) > 2 * self.window:
            self._recent.popleft()
        recent = list(self._recent)
        now, before = recent[-self.window :], recent[: -self.window]
        w_hits = sum(r[0] for r in now)
        w_remote = sum(r[1] for r in now)
        w_rows = sum(r[2] for r in now)
        pv = preview
        return Metrics(
            trainer=self.trainer,
            minibatch=mb,
            epoch=epoch,
            total_minibatches=self.total_minibatches,
            remote_inputs=plan.n_requested,
            local_inputs=local_inputs,
            hits=plan.n_hits,
            misses=plan.n_misses,
            extra_rows=plan.n_extra,
            rows_fetched=plan.n_fetched,
            bytes_fetched=plan.n_fetched * self.row_bytes,
            hit_pct=_pct(plan.n_hits, plan.n_requested),
            hit_pct_window=_pct(w_hits, w_remote),
            hit_pct_cumulative=_pct(tot.hits, tot.remote_inputs),
            rows_fetched_window=w_rows / len(now),
            replaced=replaced,
            last_replaced=self._last_replaced,
            last_replaced_pct=_pct(self._last_replaced, self.capacity),
            since_replacement=mb - self._last_round if self._last_round >= 0 else -1,
            replacements=tot.replacements,
            buffer_capacity=self.capacity,
            buffer_fill=buffer_fill,
            stale_slots=pv.stale_slots if pv else 0,
            sample_s=sample_s,
            fetch_s=fetch_s,
            compute_s=compute_s,
            window=self.window,
            hit_pct_prev_window=(
                _pct(sum(r[0] for r in before), sum(r[1] for r in before))
                if before
                else _pct(w_hits, w_remote)
            ),
            repeat_miss_pct=_pct(pv.repeat_misses, plan.n_misses) if pv else 0.0,
            round_swap_rows=pv.swap_rows if pv else 0,
            round_evict_rows=pv.evict_rows if pv else 0,
            round_evict_use=pv.evict_use if pv else 0.0,
            round_admit_use=pv.admit_use if pv else 0.0,
            round_rows_window=outcome.rows if outcome else 0,
            round_admit_hits=outcome.admit_hits if outcome else 0,
            round_ghost_misses=outcome.ghost_misses if outcome else 0,
        )
