"""Figures of the drift measure (PNG), kept apart so that the trainer side needs no matplotlib.

``plot_overlap_profile`` draws :func:`rudder.trainer_hooks.drift.overlap_profile` of several
traces on one axis: phases show as level shifts, bursts as dips. ``plot_hits`` draws %-hits
over minibatches of several runs of one workload, one panel each, with the evaluation passes
shaded and the replacement rounds marked (the bench report's Drift section).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rudder.evaluation.plots import save_figure


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """A centred moving average that skips NaN (empty minibatches)."""
    if width <= 1 or values.size == 0:
        return values
    ok = ~np.isnan(values)
    kernel = np.ones(width)
    total = np.convolve(np.where(ok, values, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_overlap_profile(
    profiles: dict[str, np.ndarray],
    path: str | Path,
    *,
    window: int | None = None,
    smooth: int = 1,
    title: str | None = None,
) -> Path | None:
    """Draw each named overlap profile against the minibatch index; None if there is none.

    ``window`` (the profiles' look-back) only labels the axis; ``smooth`` > 1 draws a centred
    moving average over that many minibatches on top of the raw curve.
    """
    profiles = {k: np.asarray(v, dtype=np.float64) for k, v in profiles.items() if len(v)}
    if not profiles:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for name, values in profiles.items():
        x = np.arange(values.shape[0])
        if smooth > 1:
            (line,) = ax.plot(x, values, lw=0.5, alpha=0.35)
            ax.plot(x, _smooth(values, smooth), lw=1.2, color=line.get_color(), label=name)
        else:
            ax.plot(x, values, lw=0.9, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("minibatch")
    back = f"the previous {window} minibatches" if window else "the previous minibatches"
    ax.set_ylabel(f"share of ids seen in\n{back}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


@dataclass(frozen=True, slots=True)
class HitsPanel:
    """One run's panel: its metrics and its evaluation passes.

    ``metrics``: per-minibatch ``rudder.protocol.Metrics`` (``minibatch``, ``hit_pct``,
    ``hit_pct_window``, ``replaced``); ``eval_spans``: inclusive ``[first, last]`` minibatches.
    """

    label: str
    metrics: Sequence = ()
    eval_spans: Sequence[Sequence[int]] = field(default_factory=tuple)


def plot_hits(
    panels: Sequence[HitsPanel], path: str | Path, *, title: str | None = None
) -> Path | None:
    """%-hits over minibatches, a panel per run; None if no panel has metrics.

    Each panel: %-hits per minibatch (grey) and over the metrics' window (colour), evaluation
    minibatches shaded, a red tick on top at each replacement round.
    """
    panels = [p for p in panels if len(p.metrics)]
    if not panels:
        return None
    path = Path(path)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 0.6 + 1.45 * len(panels)), sharex=True, squeeze=False
    )
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        ms = panel.metrics
        x = [m.minibatch for m in ms]
        for i, (a, b) in enumerate(panel.eval_spans):
            ax.axvspan(a - 0.5, b + 0.5, color="0.85", lw=0, label="eval pass" if i == 0 else None)
        ax.plot(x, [m.hit_pct for m in ms], lw=0.5, color="0.55", label="%-hits")
        ax.plot(x, [m.hit_pct_window for m in ms], lw=1.3, color="tab:blue", label="window")
        rounds = [m.minibatch for m in ms if m.replaced > 0]
        if rounds:
            ax.plot(rounds, [104] * len(rounds), "|", ms=5, color="tab:red", label="replacement")
        ax.set_ylim(0, 108)
        ax.set_ylabel("%-hits", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(
            f"{panel.label}: {len(rounds)} replacement round(s)", fontsize=8, loc="left", pad=2
        )
        ax.grid(alpha=0.25)
    axes[0, 0].legend(fontsize=7, loc="lower right", ncol=4)
    axes[-1, 0].set_xlabel("minibatch (trainer 0)")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
