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

from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES, PolicySpec

CLASSIFIER_KINDS = ("lr", "rf", "gbt", "mlp")  # rudder.controller.classifiers.MODEL_KINDS
RULES = ("heuristic", "always", "never")


def _check_decider(decider: str) -> None:
    if decider in RULES or decider == "llm" or decider in CLASSIFIER_KINDS:
        return
    if decider.startswith("classifier:") and len(decider) > len("classifier:"):
        return
    if decider.startswith("every:"):
        arg = decider.partition(":")[2]
        if arg.isdigit() and int(arg) >= 1:
            return
    raise ValueError(
        f"unknown decider {decider!r}: use heuristic, always, never, every:P, llm, "
        f"{', '.join(CLASSIFIER_KINDS)} (trained by the bench) or classifier:PATH"
    )


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
            decider = rest or "heuristic"
            _check_decider(decider)
            return cls("rudder", decider)
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
    def is_agent(self) -> bool:
        """Decided by the agent sidecar (an LLM or a classifier), so it has a sync/async mode."""
        d = self.decider or ""
        return d == "llm" or d in CLASSIFIER_KINDS or d.startswith("classifier:")

    @property
    def classifier_kind(self) -> str | None:
        """The bench-trained classifier this variant needs, if any."""
        return self.decider if self.decider in CLASSIFIER_KINDS else None

    @property
    def is_user_classifier(self) -> bool:
        return (self.decider or "").startswith("classifier:")

    @property
    def path(self) -> str:
        return (self.decider or "").partition(":")[2]

    def train_decider(self, classifier_dir: Path) -> str:
        """The ``--decider`` of `rudder train` (bench classifiers resolved to their files)."""
        if self.classifier_kind:
            return f"classifier:{(classifier_dir / f'{self.classifier_kind}.joblib').resolve()}"
        return self.decider or "heuristic"
