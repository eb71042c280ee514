"""The matrix: a config's groups expanded into distinct training runs, in the order they run.

Axes that do not apply collapse: `none` has no buffer, rule deciders have no sync/async mode,
scenario knobs apply to their scenario alone, and an unshaped link is the same with or without
shaping support. A run that several groups share runs once and counts for each. The `none`
runs come first: the classifiers learn from their traces before any classifier variant trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rudder.evaluation.config import BenchConfig
from rudder.evaluation.variants import Variant
from rudder.trainer_hooks.scenarios import Scenario

STATIONARY = Scenario()
_KNOBS = Scenario()  # the knobs' defaults


def workload_slug(s: Scenario) -> str:
    """A scenario as a name part: its name, with its knobs when they are not the defaults."""
    if s.name == "eval" and s.eval_every != _KNOBS.eval_every:
        return f"eval{s.eval_every}"
    if s.name == "temporal" and (s.window, s.window_step) != (_KNOBS.window, _KNOBS.window_step):
        return f"temporal-w{s.window:g}-s{s.window_step:g}"
    return s.name


def workload_knobs(s: Scenario) -> dict:
    """The knobs that apply to ``s`` (`rudder train --eval-every / --window / --window-step`)."""
    if s.name == "eval":
        return {"eval_every": s.eval_every}
    if s.name == "temporal":
        return {"window": s.window, "window_step": s.window_step}
    return {}


@dataclass(frozen=True, slots=True)
class Setting:
    """What the runs of one comparison share: machines, link, epochs, graph and workload."""

    machines: int
    bandwidth: str | None  # None: unshaped
    epochs: int
    dataset: str = "main"  # "main" or "drift" (config.DATASETS)
    workload: Scenario = STATIONARY

    @property
    def drifts(self) -> bool:
        """Not the main graph's stationary workload: a run of the drift study."""
        return self.dataset != "main" or self.workload.name != "stationary"

    @property
    def label(self) -> str:
        text = f"{self.machines} machines, {self.bandwidth or 'unshaped'}, {self.epochs} epochs"
        if self.drifts:
            text = f"{self.dataset} graph, {workload_slug(self.workload)}: " + text
        return text

    @property
    def slug(self) -> str:
        text = f"m{self.machines}-{self.bandwidth or 'unshaped'}-e{self.epochs}"
        if self.drifts:
            text = f"{self.dataset}-{workload_slug(self.workload)}-" + text
        return text


@dataclass(frozen=True, slots=True)
class Run:
    """One `rudder train` of the matrix."""

    variant: Variant
    setting: Setting
    buffer: float | None  # None for `none`
    mode: str | None  # "async" / "sync" for agent deciders, else None
    repeat: int = 0
    groups: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def id(self) -> str:
        buf = "nobuf" if self.buffer is None else f"b{round(self.buffer * 100):02d}"
        mode = f"-{self.mode}" if self.mode else ""
        return f"{self.setting.slug}-{buf}-{self.variant.slug}{mode}-r{self.repeat}"

    @property
    def label(self) -> str:
        return self.variant.label + (f" ({self.mode})" if self.mode == "sync" else "")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "variant": self.variant.label,
            "policy": self.variant.policy,
            "decider": self.variant.decider,
            "machines": self.setting.machines,
            "bandwidth": self.setting.bandwidth,
            "epochs": self.setting.epochs,
            "dataset": self.setting.dataset,
            "scenario": workload_slug(self.setting.workload),
            "workload": {
                "name": self.setting.workload.name,
                **workload_knobs(self.setting.workload),
            },
            "buffer": self.buffer,
            "mode": self.mode,
            "repeat": self.repeat,
            "groups": list(self.groups),
        }


def _bandwidth(text: str, shaping: bool) -> str | None:
    text = text.strip().lower()
    if text in ("", "none", "unshaped"):
        return None
    return text if shaping else None


def expand(cfg: BenchConfig, *, shaping: bool = True) -> list[Run]:
    """Every distinct run, `none` runs first, then in group order.

    ``shaping=False`` (no network namespaces here) maps shaped links to unshaped ones.
    """
    runs: dict[Run, list[str]] = {}
    for g in cfg.groups:
        epochs = g.epochs or cfg.train.epochs
        for workload in g.workloads():
            for text in g.variants:
                v = Variant.parse(text)
                for machines in g.machines:
                    for bw in g.bandwidths:
                        bandwidth = _bandwidth(bw, shaping)
                        setting = Setting(machines, bandwidth, epochs, g.dataset, workload)
                        for buffer in g.buffers if v.buffered else (None,):
                            for mode in g.modes if v.is_agent else (None,):
                                for r in range(g.repeats):
                                    run = Run(v, setting, buffer, mode, r)
                                    names = runs.setdefault(run, [])
                                    if g.name not in names:
                                        names.append(g.name)
    out = [Run(r.variant, r.setting, r.buffer, r.mode, r.repeat, tuple(n)) for r, n in runs.items()]
    return sorted(out, key=lambda r: r.variant.buffered)  # stable: `none` first


def buffers_of(runs: list[Run], setting: Setting) -> list[float]:
    """The buffer sizes the runs of ``setting`` use (what its `none` runs are replayed at)."""
    return sorted({r.buffer for r in runs if r.setting == setting and r.buffer is not None})
