"""The sidecar's statistics reply: always one message, however many trainers it has seen.

With 5,000 trainer ids the old reply was 199,890 bytes, over the 64 KiB limit, so ``rudder
agent stats`` got an error instead. A reply now lists the trainers that matter first (those
with the most decisions, then the ones that left most recently) while they fit a byte budget
and a count, and says how many it left out; the server's counters cover every trainer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from rudder.protocol import MAX_MESSAGE_BYTES

LISTED_MAX = 64  # trainers listed in one reply: bounds the work of a request, not just bytes
SERVER_BYTES = 8 * 1024  # room kept for the server's map and the message's framing
TRAINERS_BUDGET = MAX_MESSAGE_BYTES - SERVER_BYTES


def plain(value: Any) -> Any:
    """``value`` as plain JSON types (stats may hold numpy numbers; keys become strings)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


def fit(
    order: Iterable[int],
    entry: Callable[[int], dict],
    *,
    budget_bytes: int = TRAINERS_BUDGET,
    max_listed: int = LISTED_MAX,
) -> dict[int, dict]:
    """``entry(t)`` for the trainers of ``order``, in order, while they fit the budget.

    An entry too large on its own is listed as ``{"omitted": "too large"}`` rather than
    dropped silently; entries are only built for the trainers that are listed.
    """
    out: dict[int, dict] = {}
    used = 0
    for t in order:
        if len(out) >= max_listed:
            break
        e = plain(entry(t))
        size = len(msgpack.packb({str(t): e}))
        if size > budget_bytes // 4:
            e = {"omitted": "too large"}
            size = len(msgpack.packb({str(t): e}))
        if used + size > budget_bytes:
            break
        out[t] = e
        used += size
    return out
