"""Figures of the drift measure (PNG), kept apart so that the trainer side needs no matplotlib.

``plot_overlap_profile`` draws :func:`rudder.trainer_hooks.drift.overlap_profile` of several
traces on one axis: phases show as level shifts, bursts as dips.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DPI = 110


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
