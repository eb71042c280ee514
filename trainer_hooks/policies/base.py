"""The policy interface: one minibatch of remote ids in, a :class:`Plan` out.

A minibatch runs in two phases, so the rows a hit is served from are never overwritten
before they are read:

1. ``plan = policy.step(ids, replace)`` updates the bookkeeping (index, priorities) and says
   which ids hit (``plan.slots``), which rows to pull (``plan.fetch_ids``: the misses, then any
   extra rows a replacement or prefill wants) and which pulled rows go to which slot.
2. The caller reads hit rows (``buffer.read(plan.slots[plan.hits])``), pulls ``fetch_ids``, and
   calls ``policy.commit(plan, rows)`` to write the admitted rows in place.

``replace`` is the decider's word for this minibatch; only decision-driven policies listen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.round_outcome import RoundOutcome
from rudder.trainer_hooks.round_preview import RoundPreview

NO_SLOTS = np.empty(0, dtype=np.int32)
NO_SRC = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one minibatch does to the buffer and to the network."""

    slots: np.ndarray  # int32, per requested id: the slot it is served from, -1 on a miss
    fetch_ids: np.ndarray  # int64, rows to pull: the misses (request order), then extra rows
    n_misses: int  # fetch_ids[:n_misses] are the misses
    admit_slots: np.ndarray  # int32, slots that take a pulled row at commit
    admit_src: np.ndarray  # int64, index into fetch_ids of the row each admitted slot takes
    evicted: int = 0  # valid entries dropped to make room
    replaced: bool = False  # a decision-driven replacement round ran
    prefill: bool = False  # rows pulled before training to fill the buffer

    @property
    def hits(self) -> np.ndarray:
        """Boolean mask over the requested ids: served from the buffer."""
        return self.slots >= 0

    @property
    def n_requested(self) -> int:
        return int(self.slots.shape[0])

    @property
    def n_hits(self) -> int:
        return self.n_requested - self.n_misses

    @property
    def n_fetched(self) -> int:
        """Rows pulled over the network for this minibatch (misses plus extra rows)."""
        return int(self.fetch_ids.shape[0])

    @property
    def n_extra(self) -> int:
        """Rows pulled only to go into the buffer (replacement or prefill)."""
        return self.n_fetched - self.n_misses

    @property
    def n_admitted(self) -> int:
        return int(self.admit_slots.shape[0])

    @classmethod
    def lookup_only(cls, slots: np.ndarray, misses: np.ndarray) -> Plan:
        """A plan that pulls the misses and admits nothing."""
        return cls(
            slots=slots,
            fetch_ids=misses,
            n_misses=int(misses.shape[0]),
            admit_slots=NO_SLOTS,
            admit_src=NO_SRC,
        )

    @classmethod
    def prefill_of(cls, ids: np.ndarray, slots: np.ndarray) -> Plan:
        """A plan that pulls ``ids`` into ``slots`` before any minibatch."""
        return cls(
            slots=NO_SLOTS,
            fetch_ids=ids,
            n_misses=0,
            admit_slots=slots,
            admit_src=np.arange(ids.shape[0], dtype=np.int64),
            prefill=True,
        )


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """Facts about the run a policy may need beyond its buffer.

    ``prefill_ranking``: remote ids, best first (by degree), for policies that prefill.
    ``future``: for each position of the trace's concatenated ids, the minibatch of that id's
    next request (offline bounds only). ``distinct_ids``: distinct remote ids in the trace.
    ``popular``: the trace's distinct ids, most requested first (offline bounds only).
    """

    prefill_ranking: np.ndarray | None = None
    future: np.ndarray | None = None
    distinct_ids: int | None = None
    popular: np.ndarray | None = None


class Policy(ABC):
    """Decides which remote rows live in a :class:`PersistentBuffer`."""

    name: ClassVar[str]
    #: True when the policy replaces only on the decider's word (``step(..., replace=True)``).
    uses_decisions: ClassVar[bool] = False

    def __init__(self, buffer: PersistentBuffer):
        self.buffer = buffer
        self.label = self.name
        self.t = 0  # minibatches stepped so far

    @property
    def capacity(self) -> int:
        return self.buffer.capacity

    def prefill(self) -> Plan | None:
        """Rows to pull before the first minibatch, if the policy prefills."""
        return None

    def step(self, ids: np.ndarray, replace: bool = False) -> Plan:
        """Look up one minibatch's remote ids (unique, int64) and plan its pull."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        plan = self._step(ids, replace)
        self.t += 1
        return plan

    @abstractmethod
    def _step(self, ids: np.ndarray, replace: bool) -> Plan:
        """Policy-specific lookup and admission for minibatch ``self.t``."""

    def commit(self, plan: Plan, fetched_rows: np.ndarray | None = None) -> None:
        """Write the admitted rows (``fetched_rows[i]`` is the row of ``plan.fetch_ids[i]``)."""
        if fetched_rows is None or plan.n_admitted == 0:
            return
        self.commit_admitted(plan, fetched_rows[plan.admit_src])

    def commit_admitted(self, plan: Plan, admitted_rows: np.ndarray) -> None:
        """Write rows in admission order: ``admitted_rows[k]`` goes to ``admit_slots[k]``."""
        self.buffer.write_rows(plan.admit_slots, admitted_rows)

    def preview(self) -> RoundPreview:
        """What a replacement round after the latest minibatch would do (the deciders' view).

        Policies without rounds can only say how many slots are free.
        """
        return RoundPreview(stale_slots=self.capacity - self.buffer.size)

    def outcome(self) -> RoundOutcome:
        """What the recent replacement rounds did since (none without rounds)."""
        return RoundOutcome()


def demand_step(buffer: PersistentBuffer, ids: np.ndarray, kernel, *state) -> Plan:
    """Run a demand-fill kernel over one minibatch and turn its output into a :class:`Plan`.

    Demand-fill caches pull exactly the misses and admit some of them. Their kernels share one
    calling convention: ``kernel(*state, ids, slots_out, admit_slots, admit_src)`` returns
    ``(n_admitted, n_evicted)``. Within one large minibatch a slot can be refilled twice; only
    its final owner's row is written (``buffer.ids`` already names it).
    """
    n = ids.shape[0]
    slots = np.empty(n, dtype=np.int32)
    admit_slots = np.empty(n, dtype=np.int32)
    admit_src = np.empty(n, dtype=np.int64)
    n_admit, evicted = kernel(*state, ids, slots, admit_slots, admit_src)
    admit_slots, admit_src = admit_slots[:n_admit], admit_src[:n_admit]
    misses = ids[slots < 0]
    if n_admit:
        final = buffer.ids[admit_slots] == misses[admit_src]
        admit_slots, admit_src = admit_slots[final], admit_src[final]
    return Plan(
        slots=slots,
        fetch_ids=misses,
        n_misses=int(misses.shape[0]),
        admit_slots=admit_slots,
        admit_src=admit_src,
        evicted=int(evicted),
    )
