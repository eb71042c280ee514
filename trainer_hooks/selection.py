"""Exact, deterministic top-k selection in O(n + k log k)."""

from __future__ import annotations

import numpy as np


def smallest_k(primary: np.ndarray, tiebreak: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest entries by ``(primary, tiebreak)``, in that order.

    A plain ``argpartition`` picks arbitrarily among ties at the cut; this takes the tied
    entries with the smallest ``tiebreak`` instead, so results never depend on NumPy's internals.
    """
    n = primary.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        chosen = np.arange(n)
    else:
        kth = np.partition(primary, k - 1)[k - 1]
        below = np.flatnonzero(primary < kth)
        tied = np.flatnonzero(primary == kth)
        tied = tied[np.argsort(tiebreak[tied], kind="stable")[: k - below.shape[0]]]
        chosen = np.concatenate([below, tied])
    return chosen[np.lexsort((tiebreak[chosen], primary[chosen]))]
