"""Buffer replacement policies, built by name with :func:`make_policy`."""

from rudder.trainer_hooks.policies.base import Plan, Policy, PolicyContext
from rudder.trainer_hooks.policies.registry import (
    POLICY_NAMES,
    PolicySpec,
    ScoredOptions,
    builtin_decider,
    make_policy,
    warm_up,
)

__all__ = [
    "POLICY_NAMES",
    "Plan",
    "Policy",
    "PolicyContext",
    "PolicySpec",
    "ScoredOptions",
    "builtin_decider",
    "make_policy",
    "warm_up",
]
