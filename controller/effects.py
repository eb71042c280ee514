"""Observed effects of a decision, and Pass@1: did the predicted direction come true.

A decision made on minibatch i lands at the next minibatch the trainer reports (j); its effect
shows in the report after that (k). The observed change is from j to k: %-hits in percentage
points, communication (rows fetched) relative. Changes within the tolerance are "stagnant".
"""

from __future__ import annotations

HIT_TOLERANCE_PP = 1.0  # |change of hit_pct| below this: stagnant
COMM_TOLERANCE = 0.05  # |relative change of rows_fetched| below this: stagnant


def direction(change: float, tolerance: float) -> str:
    if change > tolerance:
        return "increase"
    if change < -tolerance:
        return "decrease"
    return "stagnant"


def observe(before: dict, after: dict) -> tuple[str, str]:
    """Directions of %-hits and of communication from ``before`` to ``after`` (metrics)."""
    hit = direction(after["hit_pct"] - before["hit_pct"], HIT_TOLERANCE_PP)
    rows_before = max(before["rows_fetched"], 1)
    comm = direction((after["rows_fetched"] - rows_before) / rows_before, COMM_TOLERANCE)
    return hit, comm


def evaluate(landed: dict, after: dict) -> dict:
    """The history record of a landed decision, now that ``after`` shows its effect."""
    before = landed["before"]
    hit, comm = observe(before, after)
    return {
        **landed,
        "after": {
            "minibatch": after["minibatch"],
            "hit_pct": after["hit_pct"],
            "rows_fetched": after["rows_fetched"],
        },
        "observed_hit_pct": hit,
        "observed_communication": comm,
        "pass_hit": hit == landed.get("expected_hit_pct"),
        "pass_comm": comm == landed.get("expected_communication"),
    }


def history_line(rec: dict) -> str:
    """One evaluated decision, as the agent's prompt shows it."""
    b, a = rec["before"], rec["after"]
    return (
        f"- minibatch {rec['minibatch']}: {rec['decision']} (you expected %-hits "
        f"{rec.get('expected_hit_pct') or '-'}); then hit_pct {b['hit_pct']:.1f} -> "
        f"{a['hit_pct']:.1f} ({rec['observed_hit_pct']}), rows_fetched {b['rows_fetched']} "
        f"-> {a['rows_fetched']} ({rec['observed_communication']})"
    )
