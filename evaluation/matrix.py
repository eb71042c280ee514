"""The matrix: a config's groups expanded into distinct training runs, in the order they run.

Axes that do not apply collapse: `none` has no buffer, rule deciders have no sync/async mode,
and an unshaped link is the same with or without shaping support. A run that several groups
share runs once and counts for each. The `none` runs come first: the classifiers learn from
the first one's traces before any classifier variant trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rudder.evaluation.config import BenchConfig
from rudder.evaluation.variants import Variant


@dataclass(frozen=True, slots=True)
class Setting:
    """What the runs of one comparison share: machines, link, epochs."""

    machines: int
    bandwidth: str | None  # None: unshaped
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.machines} machines, {self.bandwidth or 'unshaped'}, {self.epochs} epochs"

    @property
    def slug(self) -> str:
        return f"m{self.machines}-{self.bandwidth or 'unshaped'}-e{self.epochs}"


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
        for text in g.variants:
            v = Variant.parse(text)
            for machines in g.machines:
                for bw in g.bandwidths:
                    setting = Setting(machines, _bandwidth(bw, shaping), epochs)
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
