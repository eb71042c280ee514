"""The decision vocabulary: trainers and the agent import it from here, never from each other.

``trainer_hooks/`` and ``controller/`` meet only through this module and the wire protocol.

- :class:`Decision`: the only two answers (also what the wire carries).
- :data:`DIRECTIONS` and :func:`implied_effects`: what a decision predicts for %-hits and for
  communication when its decider states nothing (rules, classifiers).
- :class:`Decider`: the interface every decider implements (rules in ``rudder.rules``,
  classifiers in ``rudder.controller.classifiers``).
- :class:`DeciderSpec`: a decider's name, parsed once (``heuristic``, ``every:4``, ``llm``,
  ``classifier:PATH``), so nobody tests strings like ``spec == "llm"``.
- :func:`replacement_interval`: the paper's measure of how often decisions took effect.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:  # the wire bodies import this module (Decision travels on the wire)
    from rudder.protocol.messages import Metrics


class Decision(str, enum.Enum):
    """The only two answers a decider gives (a ``str`` enum: it travels as its value)."""

    SKIP = "skip"
    REPLACE = "replace"

    def __bool__(self) -> bool:
        return self is Decision.REPLACE

    def __str__(self) -> str:
        return self.value


DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "stagnant")

# What a decision implies when the decider states no prediction: (%-hits, communication).
_IMPLIED: dict[Decision, tuple[str, str]] = {
    Decision.REPLACE: ("increase", "decrease"),
    Decision.SKIP: ("stagnant", "stagnant"),
}


def implied_effects(decision: Decision | str) -> tuple[str, str]:
    """The expected direction of (%-hits, communication) that ``decision`` implies."""
    return _IMPLIED[Decision(decision)]


class Decider(ABC):
    """Answers replace/skip from a trainer's metrics, keeping whatever history it needs.

    In async mode a decider sees only the metrics it is asked about (the others are dropped).
    ``first()`` is its word for minibatch 0, before any metrics exist.
    """

    name: ClassVar[str]

    def first(self) -> Decision:
        """The decision for minibatch 0 (no metrics yet)."""
        return Decision.SKIP

    @abstractmethod
    def decide(self, metrics: Metrics) -> Decision:
        """The decision for a later minibatch, from the metrics of ``metrics.minibatch``."""

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this decider."""
        return self.name


RULES: tuple[str, ...] = ("always", "never", "every:P", "heuristic")
AGENTS: tuple[str, ...] = ("llm", "classifier:PATH")
DeciderKind = Literal["rule", "llm", "classifier"]


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    """A decider's name, parsed and checked once: ``kind`` says where it can run.

    Rules run anywhere (in the trainer, in replay, in a sidecar); ``llm`` and
    ``classifier:PATH`` are the agent's deciders and run in the agent (a sidecar, or the agent
    in process for replay and prompt evaluation).
    """

    kind: DeciderKind
    name: str  # "always", "never", "every", "heuristic", "llm", "classifier"
    arg: str = ""  # the period of every:P, the model file of classifier:PATH

    @classmethod
    def parse(cls, spec: str | DeciderSpec) -> DeciderSpec:
        """Parse ``spec``; ValueError naming the choices for anything unknown."""
        if isinstance(spec, DeciderSpec):
            return spec
        name, sep, arg = spec.strip().partition(":")
        if name == "every":
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"every:P needs a positive integer P, got {spec!r}")
            return cls("rule", name, str(int(arg)))
        if name in ("always", "never", "heuristic", "llm") and not sep:
            return cls("llm" if name == "llm" else "rule", name)
        if name == "classifier":
            if not arg:
                raise ValueError("the classifier decider needs a model file: classifier:PATH")
            return cls("classifier", name, arg)
        raise ValueError(f"unknown decider {spec!r}; choose one of {', '.join(RULES + AGENTS)}")

    @property
    def is_agent(self) -> bool:
        """The LLM or a classifier: the agent's deciders, not a rule."""
        return self.kind != "rule"

    @property
    def is_llm(self) -> bool:
        return self.kind == "llm"

    @property
    def period(self) -> int:
        """P of ``every:P``."""
        if self.name != "every":
            raise ValueError(f"{self} has no period")
        return int(self.arg)

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


def replacement_interval(minibatches: Sequence[int]) -> float:
    """Mean gap, in minibatches, between consecutive decisions taking effect (0 for < 2)."""
    if len(minibatches) < 2:
        return 0.0
    return (minibatches[-1] - minibatches[0]) / (len(minibatches) - 1)
