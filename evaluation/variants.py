"""Variants: what one bench run trains with, named the way the report shows them.

``none``, ``static``, ``fixed``, ``periodic[:P]``, ``lru``, ``lfu``, ``s3fifo`` are policies
with their own (or no) decision rule. ``rudder:DECIDER`` is Rudder's buffer with a decider:
``heuristic``, ``always``, ``never``, ``every:P``, ``llm``, a classifier the bench trains
(``lr``, ``rf``, ``gbt``, ``mlp``) or one you trained (``classifier:PATH``). ``rudder`` alone
means ``rudder:heuristic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rudder.decisions import DeciderSpec
from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES, PolicySpec

CLASSIFIER_KINDS = ("lr", "rf", "gbt", "mlp")  # rudder.controller.classifiers.MODEL_KINDS


def decider_spec(decider: str | None) -> DeciderSpec | None:
    """The spec of a variant's decider; None for none and for a classifier the bench trains.

    ValueError naming the choices for anything else that does not parse.
    """
    if decider is None or decider in CLASSIFIER_KINDS:
        return None
    try:
        return DeciderSpec.parse(decider)
    except ValueError:
        raise ValueError(
            f"unknown decider {decider!r}: use heuristic, always, never, every:P, llm, "
            f"{', '.join(CLASSIFIER_KINDS)} (trained by the bench) or classifier:PATH"
        ) from None


def is_llm(decider: str | None) -> bool:
    """Whether a variant's (or a recorded run's) decider is the LLM."""
    spec = decider_spec(decider)
    return spec is not None and spec.is_llm


@dataclass(frozen=True, slots=True)
class Variant:
    """A policy, and for ``rudder`` its decider."""

    policy: str  # a PolicySpec string
    decider: str | None = None  # rudder only

    @classmethod
    def parse(cls, text: str) -> Variant:
        text = text.strip()
        name, _, rest = text.partition(":")
        if name == "rudder":
            spec = decider_spec(rest or "heuristic")
            return cls("rudder", rest if spec is None else str(spec))
        spec = PolicySpec.parse(text)
        if spec.name in OFFLINE_POLICIES:
            raise ValueError(f"{text!r} is an offline bound: the bench replays it, not trains it")
        return cls(str(spec))

    @property
    def label(self) -> str:
        return self.policy if self.decider is None else f"{self.policy}:{self.decider}"

    @property
    def slug(self) -> str:
        """The label as a safe directory-name part."""
        text = self.label if not self.is_user_classifier else f"rudder-{Path(self.path).stem}"
        return text.replace(":", "-").replace("/", "-")

    @property
    def buffered(self) -> bool:
        return self.policy != "none"

    @property
    def spec(self) -> DeciderSpec | None:
        """The decider's spec (None without a decider, or for a classifier the bench trains)."""
        return decider_spec(self.decider)

    @property
    def is_agent(self) -> bool:
        """Decided by the agent sidecar (an LLM or a classifier), so it has a sync/async mode."""
        spec = self.spec
        return self.classifier_kind is not None or (spec is not None and spec.is_agent)

    @property
    def is_llm(self) -> bool:
        return is_llm(self.decider)

    @property
    def classifier_kind(self) -> str | None:
        """The bench-trained classifier this variant needs, if any."""
        return self.decider if self.decider in CLASSIFIER_KINDS else None

    @property
    def is_user_classifier(self) -> bool:
        spec = self.spec
        return spec is not None and spec.kind == "classifier"

    @property
    def path(self) -> str:
        """The model file of ``classifier:PATH`` ("" for any other decider)."""
        spec = self.spec
        return spec.arg if spec is not None and spec.kind == "classifier" else ""

    def train_decider(self, classifier_dir: Path) -> str:
        """The ``--decider`` of `rudder train` (bench classifiers resolved to their files)."""
        if self.classifier_kind:
            return f"classifier:{(classifier_dir / f'{self.classifier_kind}.joblib').resolve()}"
        return self.decider or "heuristic"
