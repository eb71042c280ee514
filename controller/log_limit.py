"""Rate-limited logging for the sidecar: a peer decides how often things go wrong, not the log.

One line per rejected message let a probe write 105 MB of log in 6 s. Here each kind of event
(a fixed key from our code, never peer text) has a token bucket: ``burst`` lines at once, then
``per_s`` a second; the lines in between are counted, and the next line that gets through
says how many were left out. Counters in the sidecar's statistics keep the exact numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class LogLimiter:
    """Logs through ``logger`` at most ``burst`` lines at once and ``per_s`` a second per key."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        per_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if burst < 1 or per_s <= 0:
            raise ValueError(f"log limiter: burst must be >= 1 and per_s > 0, got {burst}, {per_s}")
        self._logger = logger
        self._burst = burst
        self._per_s = per_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def log(self, key: str, level: int, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` is over its rate; True if it was logged."""
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(self._burst), now)
        b.tokens = min(float(self._burst), b.tokens + (now - b.at) * self._per_s)
        b.at = now
        if b.tokens < 1.0:
            b.suppressed += 1
            return False
        b.tokens -= 1.0
        if b.suppressed:
            msg += " (and %d more like it not logged)"
            args = (*args, b.suppressed)
            b.suppressed = 0
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True
