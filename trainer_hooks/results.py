"""What one trainer reports: per-epoch and per-step records, metrics and traces on disk.

Under ``out_dir`` (``rudder train``'s run directory, or any directory a script names):

- ``trainers/rank-R.json``: the trainer's results (the run summary is built from these);
- ``trainers/metrics-rank-R.jsonl``: one :class:`~rudder.protocol.Metrics` per minibatch,
  streamed as they happen (the metrics-trace format, docs/traces.md);
- ``trainers/steps-rank-R.jsonl``: per-minibatch timings (and what the loop adds, e.g. loss);
- ``trace/rank-R.npz``: the access trace, with ``record_trace``.

Files are written to a temporary name and renamed, so a reader never sees half a file; a
file that cannot be written (read-only or full disk) is an :class:`~rudder.files.OutputError`
naming it, never a traceback or an empty file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from rudder.files import OutputError, atomic_write_text, output_errors
from rudder.metrics_trace import metrics_line
from rudder.protocol import Metrics
from rudder.trainer_hooks.metrics import Totals
from rudder.trainer_hooks.trace import TraceMeta

if TYPE_CHECKING:
    import torch

    from rudder.trainer_hooks.buffered import Batch, BufferedFeatures
    from rudder.trainer_hooks.fetcher import Fetched

log = logging.getLogger(__name__)

STREAM_FLUSH_S = 1.0  # the metrics stream reaches the disk this often (launcher/live.py reads it)
TIMES = ("sample_s", "pull_s", "hook_s", "label_s", "wait_s", "compute_s")


@dataclass(frozen=True, slots=True)
class PartitionFacts:
    """What a trainer's buffer needs to know about its partition and graph."""

    owned: tuple[int, int]  # the ids this partition owns: [lo, hi) (DistDGL's relabelling)
    remote_nodes: int  # reachable remote nodes: buffer fractions are of this
    feat_dim: int
    prefill_ranking: np.ndarray | None = None  # remote ids, best first, for static/periodic
    graph: str = ""
    num_nodes: int = 0
    num_edges: int = 0
    num_parts: int = 0
    part_id: int = 0
    minibatches_per_epoch: int = 0

    def with_minibatches(self, per_epoch: int) -> PartitionFacts:
        return dataclasses.replace(self, minibatches_per_epoch=per_epoch)


@dataclass(slots=True)
class Verification:
    """Served features compared against a plain read (``verify_features``)."""

    minibatches: int = 0
    mismatches: int = 0
    hits_checked: int = 0


@dataclass(slots=True)
class _EpochStart:
    epoch: int
    totals: Totals
    started: float


@dataclass(slots=True)
class TrainerResults:
    """Accumulates one trainer's records and writes them under ``out_dir``."""

    feats: BufferedFeatures
    out_dir: str | None
    prefill_s: float = 0.0
    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    time_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMES, 0.0))
    verification: Verification | None = None
    created: float = field(default_factory=time.perf_counter)
    _metrics_file: IO[str] | None = None
    _flushed_at: float = 0.0

    def __post_init__(self) -> None:
        if self.feats.config.verify_features:
            self.verification = Verification()
        if self.out_dir is not None:
            self.feats.hook.listeners.append(self._stream)

    # -- while training ------------------------------------------------------------------------

    def _stream(self, m: Metrics) -> None:
        try:
            if self._metrics_file is None:
                path = self._path("trainers", f"metrics-rank-{self.feats.rank}.jsonl")
                self._metrics_file = open(path, "w", buffering=1 << 16)  # noqa: SIM115 (closed in write)
            self._metrics_file.write(metrics_line(m))
            now = time.monotonic()
            if now - self._flushed_at >= STREAM_FLUSH_S:  # for readers of the live run
                self._metrics_file.flush()
                self._flushed_at = now
        except OSError as e:
            self._drop_stream()
            raise OutputError(f"cannot write the metrics stream: {e.strerror or e}") from None

    def _drop_stream(self) -> None:
        """Close and remove a metrics stream that could not be written (never a stub file)."""
        f, self._metrics_file = self._metrics_file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                os.unlink(f.name)

    def verify(self, f: Fetched, plain: torch.Tensor) -> None:
        import torch

        v = self.verification
        assert v is not None
        v.minibatches += 1
        v.hits_checked += f.plan.n_hits
        if not torch.equal(f.x, plain):
            v.mismatches += 1
            log.error("minibatch %d: features differ from a plain read", f.metrics.minibatch)

    def begin_epoch(self, epoch: int) -> _EpochStart:
        totals = Totals(**asdict(self.feats.accounting.totals))
        return _EpochStart(epoch, totals, time.perf_counter())

    def end_epoch(self, start: _EpochStart) -> None:
        now = self.feats.accounting.totals
        before = start.totals
        rec = {"epoch": start.epoch, "time_s": time.perf_counter() - start.started}
        for key in ("minibatches", "remote_inputs", "hits", "rows_fetched", "bytes_fetched"):
            rec[key] = getattr(now, key) - getattr(before, key)
        self.epochs.append(rec)
        log.info(
            "trainer %d epoch %d/%s: %.2f s, %.1f%% hits, %d rows fetched",
            self.feats.rank,
            start.epoch + 1,
            self.feats.config.epochs or "?",
            rec["time_s"],
            100 * rec["hits"] / max(rec["remote_inputs"], 1),
            rec["rows_fetched"],
        )

    def step(self, b: Batch, compute_s: float) -> None:
        f, m = b.fetched, b.fetched.metrics
        times = {
            "sample_s": b.sample_s,
            "pull_s": f.pull_s,
            "hook_s": f.hook_s,
            "label_s": b.prepare_s,
            "wait_s": b.wait_s,
            "compute_s": compute_s,
        }
        for k, v in times.items():
            self.time_s[k] += v
        b.step.update(
            minibatch=m.minibatch,
            epoch=m.epoch,
            inputs=int(b.x.shape[0]),
            remote=f.plan.n_requested,
            hits=f.plan.n_hits,
            rows_fetched=f.plan.n_fetched,
            replaced=m.replaced,
            **times,
        )
        self.steps.append(b.step)

    # -- at the end ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        feats = self.feats
        tot = feats.accounting.totals
        epochs = self.epochs or [self._whole_run_as_epoch()]
        channel = feats.channel
        counters = getattr(channel, "counters", None)
        return {
            "rank": feats.rank,
            "part": feats.facts.part_id,
            "policy": feats.hook.policy.label,
            "decider": feats.decider_name,
            "scenario": feats.config.scenario,
            "capacity": feats.hook.policy.capacity,
            "remote_node_count": feats.facts.remote_nodes,
            "startup_s": _process_age_s() - (time.perf_counter() - self.created),
            "prefill_s": self.prefill_s,
            "epochs": epochs,
            "totals": asdict(tot),
            "hit_rate": tot.hit_rate,
            "time_s": dict(self.time_s),
            **feats.hook.decisions(),
            "agent": counters() if callable(counters) else None,
            "verification": asdict(self.verification) if self.verification else None,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def _whole_run_as_epoch(self) -> dict:
        """Plain reads (no :meth:`BufferedFeatures.batches`): the run as one epoch."""
        t = self.feats.accounting.totals
        rec = {"epoch": 0, "time_s": time.perf_counter() - self.created}
        rec.update({k: getattr(t, k) for k in ("minibatches", "remote_inputs", "hits")})
        rec.update(rows_fetched=t.rows_fetched, bytes_fetched=t.bytes_fetched)
        return rec

    def write(self, extra: dict[str, Any]) -> dict:
        """Write everything under ``out_dir`` (if any); returns the results with ``extra``."""
        result = {**self.to_dict(), **extra}
        if self._metrics_file is not None:
            try:
                self._metrics_file.close()  # flushes the last lines: a full disk shows here
                self._metrics_file = None
            except OSError as e:
                name = self._metrics_file.name
                self._drop_stream()
                raise OutputError(f"cannot write {name}: {e.strerror or e}") from None
        if self.out_dir is None:
            return result
        rank = self.feats.rank
        atomic_write_text(
            self._path("trainers", f"rank-{rank}.json"),
            json.dumps(result, indent=2, default=_json) + "\n",
        )
        atomic_write_text(
            self._path("trainers", f"steps-rank-{rank}.jsonl"),
            "".join(json.dumps(s, default=_json) + "\n" for s in self.steps),
        )
        recorder = self.feats.hook.recorder
        if recorder is not None:
            f, cfg = self.feats.facts, self.feats.config
            meta = TraceMeta(
                graph=f.graph,
                num_nodes=f.num_nodes,
                num_edges=f.num_edges,
                num_parts=f.num_parts,
                part_id=f.part_id,
                trainer=rank,
                local_nodes=f.owned[1] - f.owned[0],
                remote_node_count=f.remote_nodes,
                fanouts=tuple(cfg.fanouts),
                batch_size=cfg.batch_size,
                feat_dim=f.feat_dim,
                epochs=max(len(self.epochs), 1),
                source="distdgl",
                timings="measured",
                extra={"policy": cfg.policy, "scenario": cfg.scenario},
            )
            path = self._path("trace", f"rank-{rank}.npz")
            try:
                with output_errors(f"the access trace {path}"):
                    recorder.build(meta, f.prefill_ranking).save(path)  # tmp + rename itself
            finally:
                with contextlib.suppress(OSError):
                    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        return result

    def _path(self, *parts: str) -> Path:
        assert self.out_dir is not None
        path = Path(self.out_dir).joinpath(*parts)
        with output_errors(f"the directory {path.parent}"):
            path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _process_age_s() -> float:
    """Seconds since this process started (start-up = process start to the hook's creation)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def _json(value: object) -> object:
    """json.dumps fallback for numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
