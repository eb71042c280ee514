"""Scoring rules: how buffered entries earn and lose their place.

Both rules have the same per-minibatch shape. After minibatch ``t`` is looked up:

* an entry that was hit:       ``s <- min(s + add, max_score)``
* an entry that was not hit:   ``s <- s * decay``
* an entry with ``s < threshold`` is *stale*: a replacement round may evict it.

``additive`` (the paper's text, section 2.1): a hit adds ``alpha``; an idle minibatch multiplies
by ``gamma``. ``multiplicative`` (the authors' code): every minibatch multiplies by
``1 - alpha`` and a hit undoes that minibatch's decay (``add = 0``), so an entry is stale once it
has been idle for more than ``period`` minibatches (threshold ``(1 - alpha) ** period``).
Defaults (additive): alpha 1, gamma 0.3, threshold 0.5, initial 1, max 8; an entry goes stale
after 1 idle minibatch when fresh, 3 when saturated. Multiplicative: alpha 0.05, period 25.

New entries start at ``initial_score`` (bounded, unlike the authors' raw miss count, which made
entries sticky without limit). Decay is applied lazily: a slot stores its score and the
minibatch it was last updated (``stamps``); its value at ``t`` is ``score * decay ** (t - stamp)``.
So a minibatch costs O(hits), not O(capacity); only a replacement round scans the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _decayed(score, decay, steps):
    # The one place decay is computed, so a threshold built with it compares exactly.
    return score * decay**steps


@nb.njit(cache=True)
def _apply_hits(scores, stamps, slots, t, add, decay, max_score):
    for k in range(slots.shape[0]):
        s = slots[k]
        if s < 0:
            continue
        # Idle minibatches since the last update (stamp+1 .. t-1) decay; minibatch t adds.
        v = _decayed(scores[s], decay, t - 1 - stamps[s]) + add
        scores[s] = v if v < max_score else max_score
        stamps[s] = t


@nb.njit(cache=True)
def _values(scores, stamps, n, t, decay, out):
    for s in range(n):
        out[s] = _decayed(scores[s], decay, t - stamps[s])


@nb.njit(cache=True)
def _values_at(scores, stamps, slots, t, decay, out):
    for k in range(slots.shape[0]):
        s = slots[k]
        out[k] = _decayed(scores[s], decay, t - stamps[s])


@nb.njit(cache=True)
def _count_below(scores, stamps, n, t, decay, threshold):
    c = 0
    for s in range(n):
        if _decayed(scores[s], decay, t - stamps[s]) < threshold:
            c += 1
    return c


@dataclass(frozen=True, slots=True)
class ScoringRule:
    """A scoring rule reduced to its constants; subclasses say where the constants come from."""

    name: ClassVar[str]
    add: float
    decay: float
    threshold: float
    initial_score: float
    max_score: float

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"{self.name}: decay must lie in (0, 1), got {self.decay}")
        if self.add < 0:
            raise ValueError(f"{self.name}: the hit increment must be >= 0, got {self.add}")
        if not 0.0 < self.threshold < self.initial_score <= self.max_score:
            raise ValueError(
                f"{self.name}: need 0 < threshold < initial_score <= max_score, got "
                f"threshold={self.threshold}, initial_score={self.initial_score}, "
                f"max_score={self.max_score}"
            )

    def on_hits(self, scores: np.ndarray, stamps: np.ndarray, slots: np.ndarray, t: int) -> None:
        """Credit the slots hit by minibatch ``t`` (``slots`` may hold -1 for misses)."""
        _apply_hits(scores, stamps, slots, t, self.add, self.decay, self.max_score)

    def values(self, scores: np.ndarray, stamps: np.ndarray, n: int, t: int) -> np.ndarray:
        """Scores of slots ``0..n-1`` as of the end of minibatch ``t``."""
        out = np.empty(n, dtype=np.float64)
        _values(scores, stamps, n, t, self.decay, out)
        return out

    def values_at(
        self, scores: np.ndarray, stamps: np.ndarray, slots: np.ndarray, t: int
    ) -> np.ndarray:
        """Scores of ``slots`` as of the end of minibatch ``t``."""
        out = np.empty(slots.shape[0], dtype=np.float64)
        _values_at(scores, stamps, slots, t, self.decay, out)
        return out

    def count_stale(self, scores: np.ndarray, stamps: np.ndarray, n: int, t: int) -> int:
        """How many of slots ``0..n-1`` are stale at the end of minibatch ``t``."""
        return int(_count_below(scores, stamps, n, t, self.decay, self.threshold))


@dataclass(frozen=True, slots=True)
class Additive(ScoringRule):
    """The paper's rule: ``+alpha`` on a hit, ``*gamma`` when idle, stale below ``threshold``."""

    name: ClassVar[str] = "additive"

    @classmethod
    def create(
        cls,
        alpha: float = 1.0,
        gamma: float = 0.3,
        threshold: float = 0.5,
        initial_score: float = 1.0,
        max_score: float = 8.0,
    ) -> Additive:
        """Defaults: a fresh entry is stale after 1 idle minibatch, a saturated one after 3.

        Rounds follow *recent* use; long-run use is the policy's admission (``freq``). Chosen
        on stationary and drifting traces together (docs/policies.md): gamma 0.9 keeps old
        entries 7-27 minibatches and cannot follow a moving working set.
        """
        return cls(alpha, gamma, threshold, initial_score, max_score)


@dataclass(frozen=True, slots=True)
class Multiplicative(ScoringRule):
    """The authors' rule: ``*(1-alpha)`` when idle, stale after ``period`` idle minibatches."""

    name: ClassVar[str] = "multiplicative"

    @classmethod
    def create(cls, alpha: float = 0.05, period: int = 25) -> Multiplicative:
        """Defaults as in the authors' code (alpha 0.05, period 25)."""
        if period < 1:
            raise ValueError(f"multiplicative: period must be >= 1, got {period}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"multiplicative: alpha must lie in (0, 1), got {alpha}")
        decay = 1.0 - alpha
        # Computed like the scores are, so an entry idle for exactly `period` minibatches
        # sits on the threshold (not stale) and one more idle minibatch makes it stale.
        return cls(0.0, decay, float(_decayed(1.0, decay, np.int64(period))), 1.0, 1.0)


SCORING_RULES: dict[str, type[ScoringRule]] = {r.name: r for r in (Additive, Multiplicative)}


def make_scoring(name: str, **params: float) -> ScoringRule:
    """Build a scoring rule by name, e.g. ``make_scoring("additive", gamma=0.8)``."""
    try:
        cls = SCORING_RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown scoring rule {name!r}; choose one of {sorted(SCORING_RULES)}"
        ) from None
    return cls.create(**params)
