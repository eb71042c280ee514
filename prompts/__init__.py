"""Prompt templates for the decision agent, loaded by name. Edit them freely.

A prompt is a directory here (or anywhere, given by path) with ``system.md``, a static prefix
the LLM server can keep cached, and ``user.md``, filled per decision with ``str.format``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT_PROMPT = "decision-v1"


@dataclass(frozen=True, slots=True)
class DecisionPrompt:
    """A loaded prompt: the static system text and the per-decision user template."""

    name: str
    system: str
    user_template: str

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
    return DecisionPrompt(
        path.name, (path / "system.md").read_text().strip(), (path / "user.md").read_text().strip()
    )


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
    fields = {
        **current,
        "remaining_minibatches": max(current["total_minibatches"] - current["minibatch"] - 1, 0),
        "since_replacement_text": "none yet" if since < 0 else f"{since} minibatches ago",
        "history": "\n".join(history) or "- none yet",
    }
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user(fields)},
    ]


def metrics_history(records: list[dict]) -> list[str]:
    """History lines from bare metrics records (when no decision history exists)."""
    return [
        f"- minibatch {h['minibatch']}: "
        + (f"replaced {h['replaced']} rows" if h.get("replaced") else "no replacement")
        + f"; hit_pct {h['hit_pct']:.1f}, rows_fetched {h['rows_fetched']}"
        for h in records
    ]
