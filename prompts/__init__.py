"""Prompt templates for the decision agent, loaded by name. Edit them freely.

A prompt is a directory here (or anywhere, given by path) with ``system.md``, a static prefix
the LLM server can keep cached, ``user.md``, filled per decision with ``str.format``, and
optionally ``schema.json``, the answer's JSON schema (default :data:`DECISION_SCHEMA`). The
schema's property order is the order the model writes them in: a prompt that puts
``decision`` first lets the agent act on it while the rest is still being generated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rudder.rules import ROUND_PAYOFF

HERE = Path(__file__).parent
DEFAULT_PROMPT = "decision-v4"


@dataclass(frozen=True, slots=True)
class DecisionPrompt:
    """A loaded prompt: the static system text and the per-decision user template."""

    name: str
    system: str
    user_template: str
    schema: dict = field(default_factory=lambda: DECISION_SCHEMA)

    def user(self, fields: dict) -> str:
        """The user message for one decision (``fields``: the metrics plus extras)."""
        try:
            return self.user_template.format(**fields)
        except (KeyError, ValueError) as e:
            raise ValueError(f"prompt {self.name!r}: cannot fill user.md: {e!r}") from None


def available() -> list[str]:
    """Names of the prompts shipped with Rudder."""
    return sorted(p.name for p in HERE.iterdir() if (p / "system.md").is_file())


def load(name_or_path: str = DEFAULT_PROMPT) -> DecisionPrompt:
    """A prompt by name (shipped) or by directory path."""
    path = Path(name_or_path)
    if not (path / "system.md").is_file():
        path = HERE / name_or_path
    if not (path / "system.md").is_file() or not (path / "user.md").is_file():
        raise ValueError(
            f"unknown prompt {name_or_path!r}: expected a directory with system.md and user.md, "
            f"or one of {', '.join(available())}"
        )
    schema = _schema(path / "schema.json") if (path / "schema.json").is_file() else None
    return DecisionPrompt(
        path.name,
        (path / "system.md").read_text().strip(),
        (path / "user.md").read_text().strip(),
        schema or DECISION_SCHEMA,
    )


def _schema(path: Path) -> dict:
    """A prompt's answer schema: the decision schema's fields and values, in any order."""
    try:
        schema = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON schema: {e}") from None
    props = schema.get("properties") if isinstance(schema, dict) else None
    want = DECISION_SCHEMA["properties"]
    if not isinstance(props, dict) or set(props) != set(want):
        raise ValueError(f"{path}: the answer must have exactly the properties {sorted(want)}")
    for key in ("decision", "expected_hit_pct", "expected_communication"):
        if props[key].get("enum") != want[key]["enum"]:
            raise ValueError(f"{path}: {key} must be one of {want[key]['enum']}")
    if sorted(schema.get("required", [])) != sorted(DECISION_SCHEMA["required"]):
        raise ValueError(f"{path}: every property must be required")
    return schema


#: The answer the decision prompt asks for, enforced as a grammar by the LLM server.
DECISION_SCHEMA = {
    # Property order is generation order under the grammar: the reason and the expected effects
    # come first, so the model has stated them before it commits to a decision.
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 100},
        "expected_hit_pct": {"type": "string", "enum": ["increase", "decrease", "stagnant"]},
        "expected_communication": {"type": "string", "enum": ["increase", "decrease", "stagnant"]},
        "decision": {"type": "string", "enum": ["replace", "skip"]},
    },
    "required": ["reason", "expected_hit_pct", "expected_communication", "decision"],
}


def decision_messages(prompt: DecisionPrompt, current: dict, history: list[str]) -> list[dict]:
    """Chat messages for one decision: the static system text, then the metrics.

    ``current`` is a metrics record (the fields of a metrics-trace line); ``history`` holds
    ready lines about earlier decisions and their effects, oldest first.
    """
    since = current.get("since_replacement", -1)
    net = current.get("round_swap_rows", 0) * (
        current.get("round_admit_use", 0.0) - current.get("round_evict_use", 0.0)
    )
    hits, ghosts = current.get("round_admit_hits", 0), current.get("round_ghost_misses", 0)
    payoff = hits / max(ghosts, 1)
    outcome, last_round = _round_outcome_text(current, since, payoff)
    fields = {
        **current,
        "round_net": net,
        "round_payoff": payoff,
        "round_outcome_text": outcome,
        "since_replacement_vs_window": last_round,
        "remaining_minibatches": max(current["total_minibatches"] - current["minibatch"] - 1, 0),
        "since_replacement_text": "none yet" if since < 0 else f"{since} minibatches ago",
        "history": "\n".join(history) or "- none yet",
        # The last two only: each line is ~35 tokens the model reads on every decision.
        "history_recent": "\n".join(history[-2:]) or "- none yet",
    }
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user(fields)},
    ]


def _round_outcome_text(current: dict, since: int, payoff: float) -> tuple[str, str]:
    """What the rounds of the window did, with its verdict, and when the last round ran.

    Whether to try a round is said only when none ran in the window (else the outcome decides).
    """
    rows = current.get("round_rows_window", 0)
    if since < 0:
        last = "none yet: try one"
    elif rows:
        last = f"{since} minibatches ago"
    elif since >= 2 * current.get("window", 1):
        last = f"{since} minibatches ago, at least 2W: try one"
    else:
        last = f"{since} minibatches ago, under 2W: wait"
    if not rows:
        return "none", last
    verdict = (
        f"at least {ROUND_PAYOFF:g}: rounds pay"
        if payoff >= ROUND_PAYOFF
        else f"below {ROUND_PAYOFF:g}: rounds churn"
    )
    outcome = (
        f"{rows} rows put in, hit {current.get('round_admit_hits', 0)} times since; the rows "
        f"they took out were missed {current.get('round_ghost_misses', 0)} times since: payoff "
        f"{payoff:.1f}, {verdict}"
    )
    return outcome, last


def metrics_history(records: list[dict]) -> list[str]:
    """History lines from bare metrics records (when no decision history exists)."""
    return [
        f"- minibatch {h['minibatch']}: "
        + (f"replaced {h['replaced']} rows" if h.get("replaced") else "no replacement")
        + f"; hit_pct {h['hit_pct']:.1f}, rows_fetched {h['rows_fetched']}"
        for h in records
    ]
