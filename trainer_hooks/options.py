"""How a trainer uses Rudder: one typed config, from keyword arguments or the environment.

:class:`RudderConfig` is what :class:`~rudder.trainer_hooks.buffered.BufferedFeatures` takes.
A script builds it from keyword arguments; ``rudder train`` (built-in loop or ``--script``)
describes the run in the environment, and :meth:`RudderConfig.from_env` reads it:

- ``RUDDER_RUN_CONFIG``: the run's ``run.json`` (policy, decider, buffer, output directory,
  epochs, ...), written by ``rudder train``;
- ``RUDDER_AGENT_ENDPOINT``, ``RUDDER_RUN_ID``, ``RUDDER_RANK``: this machine's agent sidecar,
  the run, this trainer's global rank;
- ``RUDDER_<FIELD>`` for any field below (``RUDDER_POLICY=fixed``, ``RUDDER_BUFFER_FRACTION=0.05``):
  how to set Rudder up when DGL's own launcher starts the script.

The environment wins over the script's keyword arguments, so one script runs every variant
that ``rudder train`` or a launch command asks for.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rudder.decisions import DeciderSpec
from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES, PolicySpec
from rudder.trainer_hooks.scenarios import SCENARIOS

AGENT_PLACES = ("auto", "inproc", "sidecar")
AGENT_MODES = ("async", "sync")
_ENV_PREFIX = "RUDDER_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(kw_only=True, frozen=True, slots=True)
class RudderConfig:
    """Rudder's settings for one trainer; every field has a sensible default."""

    policy: str = "rudder"  # none, static, fixed, periodic[:P], lru, lfu, s3fifo, rudder
    decider: str = "heuristic"  # for `rudder`: always, never, every:P, heuristic, llm, ...
    buffer_fraction: float = 0.25  # of the remote nodes the partition can reach
    buffer_rows: int | None = None  # an absolute size instead of the fraction
    scoring: str = "additive"  # or "multiplicative" (docs/policies.md)
    candidate_window: int = 1  # minibatches whose misses are replacement candidates
    fill_free: bool = True  # free slots take misses without waiting for a decision
    admission: bool = True  # rudder: a miss used more than the weakest entry takes its slot
    agent: str = "auto"  # where `rudder` decides: inproc, sidecar, auto (sidecar for agents)
    agent_mode: str = "async"  # sidecar: async (never wait) or sync (wait every minibatch)
    agent_endpoint: str | None = None  # this machine's sidecar (ipc://... or tcp://127.0.0.1:P)
    run_id: str = ""
    out_dir: str | None = None  # results, metrics and traces go under it (None: nowhere)
    record_trace: bool = False  # write out_dir/trace/rank-R.npz at close
    verify_features: bool = False  # also read every minibatch plainly and compare (debugging)
    scenario: str = "stationary"  # the workload, as recorded in results and traces
    epochs: int = 0  # planned epochs (0: unknown): the agent's sense of progress
    batch_size: int = 0  # recorded in traces
    fanouts: tuple[int, ...] = ()  # recorded in traces

    def __post_init__(self) -> None:
        spec = PolicySpec.parse(self.policy)
        if spec.name in OFFLINE_POLICIES:
            raise ValueError(f"{self.policy} is an offline bound: use it with `rudder replay`")
        DeciderSpec.parse(self.decider)
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise ValueError(f"buffer_fraction must lie in [0, 1], got {self.buffer_fraction}")
        if self.buffer_rows is not None and self.buffer_rows < 0:
            raise ValueError(f"buffer_rows must be >= 0, got {self.buffer_rows}")
        if self.agent not in AGENT_PLACES:
            raise ValueError(f"agent must be one of {AGENT_PLACES}, got {self.agent!r}")
        if self.agent_mode not in AGENT_MODES:
            raise ValueError(f"agent_mode must be one of {AGENT_MODES}, got {self.agent_mode!r}")
        if self.agent == "inproc" and self.decider_spec.is_agent:
            raise ValueError(
                f"decider {self.decider!r} runs in the agent sidecar: use agent='sidecar'"
            )
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {SCENARIOS}")
        if self.candidate_window < 1 or self.epochs < 0:
            raise ValueError("candidate_window must be >= 1 and epochs >= 0")

    @property
    def decider_spec(self) -> DeciderSpec:
        return DeciderSpec.parse(self.decider)

    @property
    def uses_sidecar(self) -> bool:
        """Decisions come from this machine's agent sidecar (policy ``rudder`` only)."""
        place = self.agent
        sidecar = place == "sidecar" or (place == "auto" and self.decider_spec.is_agent)
        return PolicySpec.parse(self.policy).name == "rudder" and sidecar

    @classmethod
    def from_options(cls, options: object, **overrides: Any) -> RudderConfig:
        """The fields ``options`` shares with this config (``rudder train``'s options)."""
        return cls(**{**_shared_fields(options), **overrides})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> RudderConfig:
        """``kwargs`` overridden by what the environment says (see the module docstring)."""
        env = os.environ if environ is None else environ
        values = dict(kwargs)
        run_config = env.get("RUDDER_RUN_CONFIG")
        if run_config:
            from rudder.trainer_hooks.distdgl.config import WorkerConfig

            wc = WorkerConfig.load(run_config)
            values.update(_shared_fields(wc.options), out_dir=wc.out_dir, agent_endpoint=None)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, hints[f.name], raw)
        return cls(**values)


def _shared_fields(options: object) -> dict[str, Any]:
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(RudderConfig)
        if hasattr(options, f.name)
    }


def _parse(name: str, annotation: object, raw: str) -> object:
    """``raw`` (an environment value) as the field's type; ValueError naming the variable."""
    types_ = set(typing.get_args(annotation)) if _is_union(annotation) else {annotation}
    if type(None) in types_ and raw.strip().lower() in ("", "none"):
        return None
    base = next(t for t in types_ if t is not type(None))
    var = _ENV_PREFIX + name.upper()
    try:
        if base is bool:
            word = raw.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {_TRUE + _FALSE}")
            return word in _TRUE
        if typing.get_origin(base) is tuple:
            return tuple(int(x) for x in raw.replace(",", " ").split())
        return base(raw)
    except ValueError as e:
        raise ValueError(f"{var}={raw!r}: {e}") from None


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
