"""Capped exponential backoff: how Rudder's clients and launcher space their retries.

As the ZeroMQ guide's reliable request-reply patterns (the paranoid pirate) retry: wait
``initial_s``, then twice as long after each failure, never more than ``max_s``, so a peer
that is briefly gone is found again at once and one that stays gone costs little.
"""

from __future__ import annotations

_MAX_DOUBLINGS = 64  # 2**64 * any positive wait is past any cap; beyond it floats overflow


def capped_backoff(attempt: int, initial_s: float, max_s: float) -> float:
    """The wait before retry ``attempt`` (0: the first): ``initial_s * 2**attempt``, capped."""
    if attempt < 0 or not 0 <= initial_s <= max_s:
        raise ValueError(
            f"backoff: need attempt >= 0 and 0 <= initial_s <= max_s, "
            f"got {attempt}, {initial_s}, {max_s}"
        )
    return min(initial_s * 2.0 ** min(attempt, _MAX_DOUBLINGS), max_s)
