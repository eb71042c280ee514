"""Training workloads whose access drifts: which seed nodes an epoch visits, and in what order.

Uniformly shuffled minibatches make access stationary: any minibatch is an exchangeable sample,
so *when* to replace buffer rows cannot matter. Real training is not always like that, and
these scenarios model three practices (docs/traces.md, "Scenarios"):

- ``locality``: proximity-ordered minibatches (BGL's proximity-aware ordering, DGL GraphBolt's
  ``LayerNeighborSampler(batch_dependency=k)``, cooperative minibatching): the seeds are
  visited in order of a position key (the original node id of a generated graph: its ring
  position, or its community), sweeping from a different start every epoch, so consecutive
  minibatches share neighbourhoods and the working set moves through the graph.
- ``eval``: shuffled training plus, every ``eval_every`` epochs, an evaluation pass over the
  validation and test nodes through the same buffer (DGL's distributed example evaluates every
  few epochs): a burst of accesses unlike training, best left alone by the decider.
- ``temporal``: time-ordered training: epoch ``e`` trains on the seeds whose arrival time lies
  in a window that slides by ``window_step`` each epoch (continual training on a growing graph).

The functions here are plain numpy/torch over node ids (no DGL), so a training script can use
them too; the built-in trainer does (``rudder train --scenario``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCENARIOS = ("stationary", "locality", "eval", "temporal")


@dataclass(kw_only=True, frozen=True, slots=True)
class Scenario:
    """A workload and its knobs (defaults: the knobs used by the bench's drift group)."""

    name: str = "stationary"
    eval_every: int = 2  # eval: an evaluation pass after every this many epochs
    window: float = 0.3  # temporal: the share of the time range an epoch trains on
    window_step: float = 0.1  # temporal: how far the window slides per epoch

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIOS)}"
            )
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 epoch, got {self.eval_every}")
        if not 0.0 < self.window <= 1.0 or not 0.0 <= self.window_step <= 1.0:
            raise ValueError(
                f"temporal: window must lie in (0, 1] and window_step in [0, 1], got "
                f"{self.window} and {self.window_step}"
            )

    @property
    def shuffled(self) -> bool:
        """Training minibatches are uniformly shuffled (the loader may shuffle itself)."""
        return self.name in ("stationary", "eval")

    def evaluates_after(self, epoch: int) -> bool:
        """An evaluation pass follows epoch ``epoch`` (0-based)."""
        return self.name == "eval" and (epoch + 1) % self.eval_every == 0


def sweep_order(seeds: np.ndarray, position: np.ndarray, epoch: int, seed: int = 0) -> np.ndarray:
    """``seeds`` by ``position`` (their proximity key), from a seeded random start per epoch."""
    if seeds.shape[0] == 0:
        return seeds
    ordered = seeds[np.lexsort((seeds, position))]
    start = int(np.random.default_rng([seed, epoch, 17]).integers(ordered.shape[0]))
    return np.roll(ordered, -start)


def time_window(
    seeds: np.ndarray, times: np.ndarray, epoch: int, window: float, step: float
) -> np.ndarray:
    """The ``seeds`` whose time lies in epoch ``epoch``'s window (wrapping around 1.0)."""
    start = (epoch * step) % 1.0
    offset = (times - start) % 1.0
    return seeds[offset < window]
