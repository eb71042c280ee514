"""Policies by name, and the fixed decision rule each baseline carries.

``make_policy("periodic:64", capacity, ctx)`` builds a ready policy; ``builtin_decider(name)``
says which decider a baseline runs with (``None`` for ``rudder``, which takes the user's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.candidates import MissTracker
from rudder.trainer_hooks.policies.base import Policy, PolicyContext
from rudder.trainer_hooks.policies.demand import LFU, LRU, NoBuffer
from rudder.trainer_hooks.policies.offline import Belady, BestStatic, by_popularity, next_use
from rudder.trainer_hooks.policies.s3fifo import S3FIFO
from rudder.trainer_hooks.policies.scored import ScoredPolicy
from rudder.trainer_hooks.scoring import ScoringRule, make_scoring

DEFAULT_PERIOD = 32  # MassiveGNN's replacement period, in minibatches


@dataclass(frozen=True, slots=True)
class ScoredOptions:
    """Knobs of the scored (Rudder-family) policies."""

    scoring: str = "additive"
    scoring_params: tuple[tuple[str, float], ...] = ()
    candidate_window: int = 1
    fill_free: bool = True  # free slots take the misses being pulled anyway, without a round
    admission: bool = True  # `rudder` only: misses that beat the weakest entry's use replace it
    admission_margin: float = 0.25  # ... by this factor (long-run use, `frequency_decay`)
    frequency_decay: float = 0.99  # per minibatch: the memory of long-run use (~100 minibatches)

    def rule(self) -> ScoringRule:
        return make_scoring(self.scoring, **dict(self.scoring_params))


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A parsed ``name[:arg]`` policy spec."""

    name: str
    arg: int | None = None

    @classmethod
    def parse(cls, spec: str) -> PolicySpec:
        name, _, arg = spec.strip().partition(":")
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {spec!r}; choose one of {', '.join(POLICY_NAMES)}")
        if not arg:
            return cls(name)
        if name != "periodic":
            raise ValueError(f"policy {name!r} takes no argument (got {spec!r})")
        try:
            period = int(arg)
        except ValueError:
            raise ValueError(f"periodic:P needs an integer P, got {spec!r}") from None
        if period < 1:
            raise ValueError(f"periodic:P needs P >= 1, got {spec!r}")
        return cls(name, period)

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


def _scored(prefill: bool, admission: bool = False) -> Callable[..., Policy]:
    """A scored policy; the baselines keep their buffer as their rule says (no admission)."""

    def build(buffer: PersistentBuffer, ctx: PolicyContext, opts: ScoredOptions) -> Policy:
        if prefill and ctx.prefill_ranking is None:
            raise ValueError("this policy prefills by degree, but the trace has no ranking")
        return ScoredPolicy(
            buffer,
            opts.rule(),
            MissTracker(window=opts.candidate_window, decay=opts.frequency_decay),
            prefill_ids=ctx.prefill_ranking if prefill else None,
            fill_free=opts.fill_free,
            admission=admission and opts.admission,
            admission_margin=opts.admission_margin,
        )

    return build


def _belady(buffer: PersistentBuffer, ctx: PolicyContext, opts: ScoredOptions) -> Policy:
    if ctx.future is None:
        raise ValueError("belady needs the whole trace (it is an offline bound)")
    return Belady(buffer, ctx.future)


def _best_static(buffer: PersistentBuffer, ctx: PolicyContext, opts: ScoredOptions) -> Policy:
    if ctx.popular is None:
        raise ValueError("best-static needs the whole trace (it is an offline bound)")
    return BestStatic(buffer, ctx.popular)


_BUILDERS: dict[str, Callable[..., Policy]] = {
    "none": lambda b, ctx, opts: NoBuffer(b),
    "static": _scored(prefill=True),
    "fixed": _scored(prefill=False),
    "periodic": _scored(prefill=True),
    "lru": lambda b, ctx, opts: LRU(b),
    "lfu": lambda b, ctx, opts: LFU(b),
    "s3fifo": lambda b, ctx, opts: S3FIFO(b),
    "rudder": _scored(prefill=False, admission=True),
    "best-static": _best_static,
    "belady": _belady,
    "infinite": lambda b, ctx, opts: LRU(b),
}
POLICY_NAMES: tuple[str, ...] = tuple(_BUILDERS)
#: Policies that need the future of the trace: replay only.
OFFLINE_POLICIES = frozenset({"best-static", "belady", "infinite"})


#: The fixed decision rule that defines each baseline built on the scored policy.
_BASELINE_RULES = {"static": "never", "fixed": "always"}


def builtin_decider(spec: PolicySpec) -> str | None:
    """The decision rule a baseline is defined by, or ``None``.

    ``None`` means: ``rudder`` takes the user's decider; demand caches and bounds take none.
    """
    if spec.name == "periodic":
        return f"every:{spec.arg or DEFAULT_PERIOD}"
    return _BASELINE_RULES.get(spec.name)


def make_policy(
    spec: str | PolicySpec,
    capacity: int,
    ctx: PolicyContext | None = None,
    *,
    feat_dim: int = 0,
    options: ScoredOptions | None = None,
) -> Policy:
    """A policy over a fresh buffer of ``capacity`` rows (``infinite`` sizes its own)."""
    spec = PolicySpec.parse(spec) if isinstance(spec, str) else spec
    ctx = ctx or PolicyContext()
    if spec.name == "infinite":
        if ctx.distinct_ids is None:
            raise ValueError("infinite needs the trace's distinct id count")
        capacity = ctx.distinct_ids
    elif spec.name == "none":
        capacity = 0
    buffer = PersistentBuffer(capacity, feat_dim=feat_dim)
    policy = _BUILDERS[spec.name](buffer, ctx, options or ScoredOptions())
    policy.label = str(spec)  # the scored baselines share one class; the label tells them apart
    return policy


def warm_up(name: str | PolicySpec, feat_dim: int = 0) -> None:
    """Load (or compile) the numba kernels a policy uses, on a throwaway 4-row buffer.

    The first call of each kernel in a process costs 10-200 ms; a trainer pays it here, before
    its first minibatch, instead of inside it.
    """
    spec = PolicySpec.parse(name) if isinstance(name, str) else name
    batches = [np.array([1, 2, 3], dtype=np.int64), np.array([2, 3, 4, 5], dtype=np.int64)]
    ids = np.concatenate(batches)
    offsets = np.array([0, 3, 7], dtype=np.int64)
    ctx = PolicyContext(
        prefill_ranking=np.array([5, 1], dtype=np.int64),
        future=next_use(offsets, ids),
        distinct_ids=5,
        popular=by_popularity(ids),
    )
    policy = make_policy(spec, 2, ctx, feat_dim=feat_dim)
    policy.prefill()
    for b in batches:
        policy.step(b, replace=True)
    policy.preview()
