"""What ``rudder bench`` runs, as one typed config: the default matrix, ``--quick``, or TOML.

A config names the generated graphs (the main one, and the drift graph of ``[drift_data]``),
the training every run shares, and *groups*: small factorial blocks (scenarios x variants x
buffers x machines x links x agent modes x repeats) on one of the graphs, whose union, without
duplicates, is the matrix. The default matrix is the paper's comparison cut to what a
2-core machine finishes in about 40 minutes, plus the drift study (about 50 more); ``--quick``
is a 4-minute smoke version. A TOML file overrides either, key by key (``[[groups]]`` replaces
the list); unknown keys are errors.
See docs/bench.md for every key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from rudder.evaluation.variants import Variant
from rudder.graphs.features import DatasetSpec
from rudder.graphs.synthetic import GraphSpec
from rudder.llm.defaults import DEFAULT_LLM_URL
from rudder.trainer_hooks.scenarios import SCENARIOS, Scenario

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODES = ("async", "sync")
DATASETS = ("main", "drift")  # main: [dataset] cut by METIS; drift: [drift_data]
PARTITION_METHODS = ("metis", "random")  # rudder.graphs.dgl_convert.PART_METHODS
_STRICT = ConfigDict(extra="forbid")


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class TrainSpec:
    """How every run trains (the `rudder train` options the matrix does not vary)."""

    epochs: int = 30
    batch_size: int = 1000
    fanouts: tuple[int, ...] = (10, 25)
    trainers: int = 1  # per machine
    seed: int = 0
    timeout_s: float = 1200.0  # per run

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.trainers < 1 or self.timeout_s <= 0:
            raise ValueError("epochs, batch_size, trainers and timeout_s must be positive")


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class LLMSpec:
    """The LLM behind `rudder:llm` (served locally unless something answers at ``url``)."""

    model: str | None = None  # default: the agent's (qwen2.5-coder-0.5b)
    url: str = DEFAULT_LLM_URL
    prompt: str | None = None  # default: the agent's


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class ClassifierSpec:
    """How the bench trains the classifier deciders (`rudder:lr`, ...) before using them.

    They learn from the access traces of the matrix's first `none` run: replayed with each of
    ``teachers`` at each buffer of the matrix, labelled by the paper's rule.
    """

    teachers: tuple[str, ...] = ("every:1", "every:2", "every:4", "every:8", "heuristic")
    label_window: int = 4
    seed: int = 0


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class Group:
    """One factorial block of the matrix.

    ``dataset`` is the graph its runs train on ("main": ``[dataset]``, "drift":
    ``[drift_data]``); ``scenarios`` the workloads (``rudder train --scenario``), each with the
    group's knobs ``eval_every`` (eval), ``window`` and ``window_step`` (temporal).
    """

    name: str
    variants: tuple[str, ...]
    buffers: tuple[float, ...] = (0.25,)
    machines: tuple[int, ...] = (2,)
    bandwidths: tuple[str, ...] = ("1gbit",)  # "none": an unshaped link
    modes: tuple[str, ...] = ("async",)  # for agent deciders (llm, classifiers)
    repeats: int = 1
    epochs: int | None = None  # default: [train] epochs
    dataset: str = "main"
    scenarios: tuple[str, ...] = ("stationary",)
    eval_every: int = 2
    window: float = 0.3
    window_step: float = 0.1

    def __post_init__(self) -> None:
        if not self.name or not self.variants:
            raise ValueError("a group needs a name and at least one variant")
        if self.dataset not in DATASETS:
            raise ValueError(
                f"group {self.name}: dataset must be one of {', '.join(DATASETS)}, "
                f"got {self.dataset!r}"
            )
        if not self.scenarios:
            raise ValueError(f"group {self.name}: scenarios must name at least one scenario")
        for sc in self.scenarios:
            if sc not in SCENARIOS:
                raise ValueError(
                    f"group {self.name}: scenarios: unknown scenario {sc!r}; choose from "
                    f"{', '.join(SCENARIOS)}"
                )
        self.workloads()  # checks the knobs
        for v in self.variants:
            Variant.parse(v)
        if not self.buffers or any(not 0.0 < b <= 1.0 for b in self.buffers):
            raise ValueError(f"group {self.name}: buffers must lie in (0, 1]")
        if not self.machines or min(self.machines) < 1:
            raise ValueError(f"group {self.name}: machines must be >= 1")
        if not self.bandwidths or not self.modes or set(self.modes) - set(MODES):
            raise ValueError(f"group {self.name}: bandwidths and modes ({MODES}) must be set")
        if self.repeats < 1 or (self.epochs is not None and self.epochs < 1):
            raise ValueError(f"group {self.name}: repeats and epochs must be >= 1")

    def workloads(self) -> list[Scenario]:
        """Each scenario with the knobs that apply to it (the others at their defaults)."""
        out = []
        for sc in self.scenarios:
            knobs: dict = {}
            if sc == "eval":
                knobs["eval_every"] = self.eval_every
            if sc == "temporal":
                knobs.update(window=self.window, window_step=self.window_step)
            try:
                out.append(Scenario(name=sc, **knobs))
            except ValueError as e:
                raise ValueError(f"group {self.name}: {e}") from None
        return out


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class ReplaySpec:
    """Policies every run's recorded traces are replayed with, at the run's buffer size."""

    policies: tuple[str, ...] = ("lru", "lfu", "s3fifo", "best-static", "belady", "infinite")
    keep_traces: bool = False  # traces are deleted once replayed, except those studies need


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class SweepSpec:
    """The buffer-size sweep: replay of the first `none` run's traces at many sizes."""

    buffers: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5)
    policies: tuple[str, ...] = (
        "static",
        "fixed",
        "periodic",
        "s3fifo",
        "rudder",
        "best-static",
        "belady",
    )


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class OODSpec:
    """Out-of-distribution check (paper 5.4): deciders replayed on a seen and an unseen graph.

    The classifiers learnt from the bench graph at the bench's batch size; here they (and the
    LLM, and the heuristic for reference) decide on traces of that graph and of ``dataset``,
    another graph trained at ``batch_size``, in the traces' virtual time.
    """

    enabled: bool = True
    dataset: DatasetSpec = field(
        default_factory=lambda: DatasetSpec(
            graph=GraphSpec(nodes=60_000, avg_degree=8.0, communities=12, mixing=0.35, seed=7),
            feat_dim=100,
            classes=12,
        )
    )
    batch_size: int = 500
    epochs: int = 20
    buffer: float = 0.25
    deciders: tuple[str, ...] = ("heuristic", "lr", "rf", "gbt", "mlp", "llm")

    def __post_init__(self) -> None:
        if not 0.0 < self.buffer <= 1.0 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError("ood: buffer must lie in (0, 1]; batch_size and epochs >= 1")


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class DriftDataSpec:
    """The graph of the groups with ``dataset = "drift"``: one whose access can drift.

    Drift reaches a trainer's buffer only when the graph's locality crosses partitions: a
    ``ring`` graph (neighbours are near in id) cut at *random* (every partition holds nodes all
    around the ring), trained in locality- or time-ordered minibatches. The main graph (DC-SBM
    communities kept whole by METIS) has none of that. ``window`` is the drift measure's
    look-back in minibatches (``rudder.trainer_hooks.drift``).
    """

    dataset: DatasetSpec = field(
        default_factory=lambda: DatasetSpec(
            graph=GraphSpec(nodes=30_000, avg_degree=15.0, communities=16, family="ring", seed=3),
            feat_dim=32,
            classes=8,
            # dense seeds: a locality-ordered minibatch of 100 spans a short arc of the ring
            # (at 0.1 it spans twice as much and best-static gets within 1.5x of belady)
            train_fraction=0.3,
            val_fraction=0.15,  # eval: passes of a few minibatches
        )
    )
    partition: str = "random"
    batch_size: int = 100
    window: int = 8

    def __post_init__(self) -> None:
        if self.partition not in PARTITION_METHODS:
            raise ValueError(
                f"drift_data: partition must be one of {', '.join(PARTITION_METHODS)}, "
                f"got {self.partition!r}"
            )
        if self.batch_size < 1 or self.window < 1:
            raise ValueError("drift_data: batch_size and window must be >= 1")


@with_config(_STRICT)
@dataclass(kw_only=True, frozen=True)
class BenchConfig:
    """Everything one `rudder bench` run does."""

    name: str = "default"
    dataset: DatasetSpec = field(
        default_factory=lambda: DatasetSpec(
            graph=GraphSpec(nodes=100_000, avg_degree=20.0, communities=32, seed=0),
            feat_dim=100,
            classes=16,
        )
    )
    train: TrainSpec = field(default_factory=TrainSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    classifiers: ClassifierSpec = field(default_factory=ClassifierSpec)
    groups: tuple[Group, ...] = ()
    drift_data: DriftDataSpec = field(default_factory=DriftDataSpec)
    replay: ReplaySpec = field(default_factory=ReplaySpec)
    sweep: SweepSpec = field(default_factory=SweepSpec)
    ood: OODSpec = field(default_factory=OODSpec)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("the matrix is empty: give at least one [[groups]] entry")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")

    def variants(self) -> list[Variant]:
        """Every variant of the matrix, in first-mention order."""
        seen: dict[str, Variant] = {}
        for g in self.groups:
            for v in g.variants:
                parsed = Variant.parse(v)
                seen.setdefault(parsed.label, parsed)
        return list(seen.values())

    def to_dict(self) -> dict:
        return _ADAPTER.dump_python(self, mode="json")


_ALL_DECIDERS = (
    "rudder:heuristic",
    "rudder:llm",
    "rudder:lr",
    "rudder:rf",
    "rudder:gbt",
    "rudder:mlp",
)

# The drift study's variants: the rules that bracket a decider (always, never) beside the rest.
_DRIFT_VARIANTS = (
    "none",
    "static",
    "fixed",
    "periodic",
    "rudder:always",
    "rudder:never",
    *_ALL_DECIDERS,
)

DEFAULT = BenchConfig(
    groups=(
        # The paper's comparison: every variant at both buffer sizes, 2 machines, 1 Gbit/s.
        Group(
            name="main",
            variants=("none", "static", "fixed", "periodic", *_ALL_DECIDERS),
            buffers=(0.05, 0.25),
        ),
        # Scaling to 4 machines, repeated for the spread of epoch times.
        Group(
            name="scale",
            variants=("none", "fixed", "periodic", "rudder:heuristic", "rudder:llm"),
            machines=(4,),
            repeats=2,
        ),
        # Without link shaping: the network is loopback-fast and CPU is the bottleneck.
        Group(
            name="unshaped",
            variants=("none", "fixed", "rudder:heuristic", "rudder:llm"),
            machines=(2, 4),
            bandwidths=("none",),
        ),
        # Synchronous vs asynchronous agents (paper 5.3): short, since sync waits for each answer.
        Group(
            name="sync",
            variants=("none", "rudder:llm", "rudder:gbt"),
            modes=("async", "sync"),
            epochs=3,
        ),
        # Workloads that drift, on the drift graph: when to replace matters here.
        Group(
            name="drift",
            dataset="drift",
            scenarios=("locality", "eval", "temporal"),
            variants=_DRIFT_VARIANTS,
            buffers=(0.05, 0.25),
            epochs=10,
        ),
        # The LLM agent deciding synchronously on a drift workload: every decision waits for
        # the model, so short, beside the rules it must beat at the same length.
        Group(
            name="drift-sync",
            dataset="drift",
            scenarios=("locality",),
            variants=("none", "rudder:always", "rudder:heuristic", "rudder:llm"),
            modes=("sync",),
            epochs=3,
        ),
    ),
)

QUICK = BenchConfig(
    name="quick",
    dataset=DatasetSpec(
        graph=GraphSpec(nodes=20_000, avg_degree=10.0, communities=8, seed=0),
        feat_dim=32,
        classes=4,
    ),
    train=TrainSpec(epochs=3, batch_size=100, timeout_s=600.0),
    classifiers=ClassifierSpec(teachers=("every:2", "every:3", "every:4", "heuristic")),
    groups=(
        Group(
            name="quick",
            variants=("none", "fixed", "rudder:heuristic", "rudder:lr", "rudder:llm"),
        ),
        Group(
            name="drift",
            dataset="drift",
            scenarios=("locality",),
            variants=("none", "static", "rudder:always", "rudder:heuristic"),
        ),
    ),
    sweep=SweepSpec(buffers=(0.05, 0.25, 0.5), policies=("fixed", "rudder", "belady")),
    ood=OODSpec(
        dataset=DatasetSpec(
            graph=GraphSpec(nodes=8_000, avg_degree=6.0, communities=4, mixing=0.35, seed=7),
            feat_dim=32,
            classes=4,
        ),
        batch_size=50,
        epochs=3,
        deciders=("heuristic", "lr"),
    ),
)

_ADAPTER = TypeAdapter(BenchConfig)


class ConfigError(ValueError):
    """A bench config that cannot be used, with every problem listed."""


def _merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``, recursively for tables; lists replace lists."""
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(data: dict[str, Any], base: BenchConfig = DEFAULT) -> BenchConfig:
    """``data`` (e.g. parsed TOML) over ``base``; a :class:`ConfigError` names each bad key."""
    try:
        return _ADAPTER.validate_python(_merge(base.to_dict(), data))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"bad bench config: {problems}") from None


def load(path: Path | None = None, *, quick: bool = False) -> BenchConfig:
    """The default (or quick) matrix, with ``path``'s TOML on top."""
    base = QUICK if quick else DEFAULT
    if path is None:
        return base
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data, base)


def with_overrides(cfg: BenchConfig, **changes: Any) -> BenchConfig:
    """A copy with top-level fields replaced (validated again)."""
    return replace(cfg, **changes)
