"""What answers inside the agent's ``decide`` node: the LLM, a rule, or a classifier.

Every model returns a raw answer for the node to validate: the LLM its reply text (parsed and
checked against the decision schema, never by substring), rules and classifiers a ready dict.
Rules and classifiers state the effect they imply (replace: %-hits up, communication down;
skip: both stagnant), so Pass@1 means the same thing for every decider.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rudder.decisions import Decider, DeciderSpec, Decision, implied_effects
from rudder.llm.catalog import DEFAULT_MODEL
from rudder.llm.defaults import DEFAULT_LLM_URL
from rudder.prompts import DECISION_SCHEMA, DEFAULT_PROMPT, decision_messages, load
from rudder.protocol import DECISIONS, DIRECTIONS, Metrics
from rudder.rules import make_decider

log = logging.getLogger(__name__)

REASON_CHARS = 200
# An answer that opens with the decision (a decision-first schema): the decision is known once
# this prefix has streamed in. Anchored at the start: never a substring search of free text.
_DECISION_FIRST = re.compile(r'\s*\{\s*"decision"\s*:\s*"(replace|skip)"')

OnDecision = Callable[[Decision], None]


class IncompleteAnswerError(RuntimeError):
    """The LLM's streamed answer ended before its last line (``done: true``)."""


class DecisionModel(Protocol):
    """Produces one raw answer from the agent state (the metrics and the history lines).

    A model that learns the decision before its answer is complete (a streamed, decision-first
    answer) calls ``on_decision`` with it at once; the caller may act on it then.
    """

    name: str

    def answer(
        self, current: dict, history: list[str], on_decision: OnDecision | None = None
    ) -> Any: ...


@dataclass(kw_only=True, frozen=True, slots=True)
class LLMConfig:
    """How the agent calls its LLM (through the Ollama API)."""

    url: str = DEFAULT_LLM_URL
    model: str = DEFAULT_MODEL
    prompt: str = DEFAULT_PROMPT
    temperature: float = 0.0
    seed: int = 7
    num_ctx: int = 2048
    num_predict: int = 128
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not 256 <= self.num_ctx <= 2048:
            raise ValueError(
                f"num_ctx must lie in 256..2048 (the agent's budget), got {self.num_ctx}"
            )
        if not 16 <= self.num_predict <= 512:
            raise ValueError(f"num_predict must lie in 16..512, got {self.num_predict}")


class LLMModel:
    """ChatOllama with the decision prompt and the decision schema as its output format."""

    def __init__(self, config: LLMConfig):
        from langchain_ollama import ChatOllama

        self.config = config
        self.name = f"llm:{config.model}"
        self.prompt = load(config.prompt)
        self.chat = ChatOllama(
            model=config.model,
            base_url=config.url,
            temperature=config.temperature,
            seed=config.seed,
            num_ctx=config.num_ctx,
            num_predict=config.num_predict,
            format=self.prompt.schema,
            client_kwargs={"timeout": config.timeout_s},
        )

    def messages(self, current: dict, history: list[str]) -> list[dict]:
        return decision_messages(self.prompt, current, history)

    def warm_up(self) -> float:
        """Put the static system prompt in the server's prompt cache; returns seconds taken.

        One token is generated. Later decisions then process only their metrics part: on a
        busy 2-core machine that is the difference between answering within a run and not.
        """
        import time

        import ollama

        t0 = time.perf_counter()
        client = ollama.Client(host=self.config.url, timeout=self.config.timeout_s)
        client.chat(
            model=self.config.model,
            messages=[
                {"role": "system", "content": self.prompt.system},
                {"role": "user", "content": "Ready?"},
            ],
            options={
                "num_ctx": self.config.num_ctx,
                "num_predict": 1,
                "temperature": self.config.temperature,
                "seed": self.config.seed,
            },
        )
        return time.perf_counter() - t0

    def answer(
        self, current: dict, history: list[str], on_decision: OnDecision | None = None
    ) -> str:
        """The reply text, streamed: ``on_decision`` hears the decision as soon as it is out."""
        msgs = [(m["role"], m["content"]) for m in self.messages(current, history)]
        text, told, done = "", on_decision is None, False
        for chunk in self.chat.stream(msgs):
            text += chunk.content if isinstance(chunk.content, str) else ""
            done = done or chunk.response_metadata.get("done") is True
            if not told and (found := _DECISION_FIRST.match(text)):
                told = True
                on_decision(Decision(found.group(1)))
        if not done:  # Ollama can end a stream early (an aborted generation): not an answer
            raise IncompleteAnswerError(f"the stream ended without done: true ({len(text)} chars)")
        return text


class RuleModel:
    """A decider of ``rudder.rules`` (or a classifier) behind the model interface."""

    def __init__(self, decider: Decider):
        self.decider = decider
        self.name = decider.spec

    def answer(
        self, current: dict, history: list[str], on_decision: OnDecision | None = None
    ) -> dict:
        decision = self.decider.decide(Metrics.from_dict(current)).value
        hit, comm = implied_effects(decision)
        return {
            "decision": decision,
            "reason": self.name,
            "expected_hit_pct": hit,
            "expected_communication": comm,
        }


def make_model(spec: str | DeciderSpec, llm: LLMConfig | None = None) -> DecisionModel:
    """A fresh model for one trainer: ``llm``, ``classifier:PATH`` or a rule spec."""
    spec = DeciderSpec.parse(spec)
    if spec.is_llm:
        return LLMModel(llm or LLMConfig())
    if spec.kind == "classifier":
        from rudder.controller.classifiers import ClassifierDecider

        return RuleModel(ClassifierDecider(spec.arg))
    return RuleModel(make_decider(spec))


def validate(raw: Any) -> tuple[dict | None, str | None]:
    """The answer as a dict matching the decision schema, or ``None`` and why not."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            return None, f"not JSON: {e.msg} at char {e.pos}"
    if not isinstance(raw, dict):
        return None, f"not a JSON object: {type(raw).__name__}"
    missing = [k for k in DECISION_SCHEMA["required"] if k not in raw]
    if missing:
        return None, f"missing {missing}"
    if raw["decision"] not in DECISIONS:
        return None, f"decision {raw['decision']!r} is not one of {DECISIONS}"
    for key in ("expected_hit_pct", "expected_communication"):
        if raw[key] not in DIRECTIONS:
            return None, f"{key} {raw[key]!r} is not one of {DIRECTIONS}"
    if not isinstance(raw["reason"], str):
        return None, "reason is not a string"
    return {
        **{k: raw[k] for k in DECISION_SCHEMA["required"]},
        "reason": raw["reason"][:REASON_CHARS],
    }, None
