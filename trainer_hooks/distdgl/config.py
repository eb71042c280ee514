"""What one trainer (or server) process of a run needs to know, as a typed, JSON-able config.

The launcher writes one :class:`WorkerConfig` per run (``run.json``); every process reads it,
plus the few per-process facts (role, rank, machine) from its environment.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES, PolicySpec
from rudder.trainer_hooks.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One partition, as the launcher resolved it from ``rudder graph partition``'s output."""

    part: int
    node_range: tuple[int, int]  # DistDGL's relabelled ids this partition owns: [lo, hi)
    remote_node_count: int  # reachable remote nodes: buffer fractions are of this
    remote_ranking: str  # .npy of those nodes by decreasing degree (absolute path)


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainingOptions:
    """How to train: what ``rudder train`` takes and hands to every trainer unchanged."""

    epochs: int = 5
    batch_size: int = 1000
    fanouts: tuple[int, ...] = (10, 25)
    hidden: int = 128
    lr: float = 3e-3
    policy: str = "rudder"
    decider: str = "heuristic"
    buffer_fraction: float = 0.25
    scoring: str = "additive"
    candidate_window: int = 1
    fill_free: bool = True  # free buffer slots take misses without waiting for a decision
    admission: bool = True  # rudder: misses used more than the weakest entry take its slot
    overlap: bool | None = None  # look-ahead prefetching; None: all policies but `none`
    verify_features: bool = False  # also do a plain pull and compare (tests, debugging)
    record_trace: bool = False  # write access traces to <out_dir>/trace
    device: str = "cpu"
    seed: int = 0
    threads_per_trainer: int = 1  # torch intra-op threads
    agent: str = "auto"  # where `rudder` decides: "inproc", "sidecar", or "auto" (sidecar for
    # the agent deciders llm and classifier:PATH, in process for rules)
    agent_mode: str = "async"  # sidecar: "async" (never wait) or "sync" (wait every minibatch)
    scenario: str = "stationary"  # the workload: stationary, locality, eval, temporal
    eval_every: int = 2  # eval: an evaluation pass after every this many epochs
    window: float = 0.3  # temporal: the share of the time range an epoch trains on
    window_step: float = 0.1  # temporal: how far the window slides per epoch

    def __post_init__(self) -> None:
        _ = self.workload  # checks the scenario and its knobs
        if PolicySpec.parse(self.policy).name in OFFLINE_POLICIES:
            raise ValueError(f"{self.policy} is an offline bound: use it with `rudder replay`")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be >= 1")
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise ValueError(f"buffer fraction must lie in [0, 1], got {self.buffer_fraction}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.agent not in ("auto", "inproc", "sidecar") or self.agent_mode not in (
            "async",
            "sync",
        ):
            raise ValueError(
                f"agent must be auto, inproc or sidecar and agent_mode async or sync, got "
                f"{self.agent!r} / {self.agent_mode!r}"
            )
        if self.agent == "inproc" and self.agent_decider:
            raise ValueError(
                f"decider {self.decider!r} runs in the agent sidecar: use --agent sidecar"
            )

    @property
    def workload(self) -> Scenario:
        """The scenario with its knobs (``trainer_hooks.scenarios``)."""
        return Scenario(
            name=self.scenario,
            eval_every=self.eval_every,
            window=self.window,
            window_step=self.window_step,
        )

    @property
    def agent_decider(self) -> bool:
        """The decider is the agent (an LLM or a classifier), not a rule."""
        from rudder.decisions import DeciderSpec

        return DeciderSpec.parse(self.decider).is_agent

    @property
    def uses_sidecar(self) -> bool:
        """Decisions come from the machines' agent sidecars (policy `rudder` only)."""
        sidecar = self.agent == "sidecar" or (self.agent == "auto" and self.agent_decider)
        return self.policy == "rudder" and sidecar

    @property
    def use_overlap(self) -> bool:
        """`none` is DistDGL as is (no look-ahead) unless asked; every other policy overlaps."""
        return self.overlap if self.overlap is not None else self.policy != "none"


@dataclass(kw_only=True, slots=True, frozen=True)
class WorkerConfig:
    """A training run as the worker processes see it: resolved facts plus the options."""

    part_config: str  # DGL's partition json (absolute)
    graph_name: str
    parts: tuple[PartInfo, ...]
    feat_dim: int
    num_classes: int
    num_nodes: int
    num_edges: int
    ip_config: str  # DGL's ip_config file (absolute)
    out_dir: str  # run directory (absolute)
    num_machines: int
    trainers_per_machine: int
    options: TrainingOptions = TrainingOptions()
    dist_timeout_s: float = 300.0
    loopback: bool = False  # all machines on 127.0.0.1 (needs the DGL patches)
    orig_nids: str = ""  # .npy: the original id of each DistDGL id (the locality key)

    def __post_init__(self) -> None:
        if self.num_machines < 1 or self.trainers_per_machine < 1:
            raise ValueError("need at least one machine and one trainer per machine")
        if len(self.parts) != self.num_machines:
            raise ValueError(
                f"{self.num_machines} machines need {self.num_machines} partitions, "
                f"the partition set has {len(self.parts)}"
            )

    @property
    def num_trainers(self) -> int:
        return self.num_machines * self.trainers_per_machine

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WorkerConfig:
        data = json.loads(Path(path).read_text())
        opts = data.pop("options")
        opts["fanouts"] = tuple(opts["fanouts"])
        data["parts"] = tuple(
            PartInfo(**{**p, "node_range": tuple(p["node_range"])}) for p in data["parts"]
        )
        return cls(options=TrainingOptions(**opts), **data)
