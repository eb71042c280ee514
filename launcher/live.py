"""A run seen while it trains: a progress bar and TensorBoard scalars.

Both are built from files the run writes anyway: every trainer streams one metrics record
per minibatch (``trainers/metrics-rank-R.jsonl``, flushed about once a second) and every
sidecar logs each decision (``logs/agent-M.decisions.jsonl``). The launcher tails them, so
the view costs training nothing, needs no new channel, works for users' scripts and for
hosts reached over ssh (the run directory is shared), and a slow terminal or disk can never
hold a trainer back. Epoch times come from ``trainers/rank-R.json`` at the end (measured by
the trainers, not by when the launcher happened to look).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 1.0
_RANK_RE = re.compile(r"metrics-rank-(\d+)\.jsonl$")


class JsonlTail:
    """The complete lines appended to a JSON-lines file since the last read, as dicts."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self._offset:  # rewritten from the start: read it again
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not ours to judge here: the run's own readers report bad lines
            if isinstance(record, dict):
                out.append(record)
        return out


@dataclass
class TrainerView:
    """The latest of one trainer, from its metrics records and its sidecar's decisions."""

    rank: int
    minibatches: int = 0  # records seen
    total: int = 0  # minibatches in its whole run (0: unknown)
    epoch: int = 0
    hit_pct_window: float = 0.0
    rows_window: float = 0.0  # mean rows fetched per minibatch over the trainer's window
    replacements: int = 0
    decisions: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LiveSnapshot:
    """What the bar shows: the run as a whole."""

    done: int
    total: int
    epoch: int  # the slowest trainer's, 1-based
    epochs: int
    hit_pct: float  # mean over trainers of their windowed %-hits
    rows_per_minibatch: float
    decisions: int  # by sidecars (their decision logs); in-process rules log none
    latency_p50_s: float | None
    rounds: int = 0  # replacement rounds, all trainers

    def postfix(self) -> str:
        if not self.done:
            return "starting: servers, agents, trainers"
        text = (
            f"epoch {self.epoch}/{self.epochs}, hits {self.hit_pct:.1f}%, "
            f"rows/mb {self.rows_per_minibatch:,.0f}"
        )
        if self.rounds:
            text += f", rounds {self.rounds}"
        if self.decisions:
            text += f", decisions {self.decisions}"
            if self.latency_p50_s is not None:
                lat = self.latency_p50_s
                text += f" (p50 {lat:.1f} s)" if lat >= 0.1 else f" (p50 {1000 * lat:.1f} ms)"
        return text


class RunWatcher:
    """Tails a run directory; feeds a TensorBoard writer per trainer when asked to."""

    def __init__(self, out: Path, epochs: int, tensorboard: Path | None = None):
        self.out = Path(out)
        self.epochs = epochs
        self.trainers: dict[int, TrainerView] = {}
        self._metrics: dict[int, JsonlTail] = {}
        self._decisions: dict[Path, JsonlTail] = {}
        self._tb_dir = tensorboard
        self._writers: dict[int, Any] = {}

    def poll(self) -> LiveSnapshot:
        for path in sorted((self.out / "trainers").glob("metrics-rank-*.jsonl")):
            m = _RANK_RE.search(path.name)
            if m is not None and int(m.group(1)) not in self._metrics:
                self._metrics[int(m.group(1))] = JsonlTail(path)
        for rank, tail in self._metrics.items():
            view = self.trainers.setdefault(rank, TrainerView(rank))
            for record in tail.read():
                self._on_metrics(view, record)
        for path in sorted((self.out / "logs").glob("agent-*.decisions.jsonl")):
            self._decisions.setdefault(path, JsonlTail(path))
        for tail in self._decisions.values():
            for record in tail.read():
                self._on_decision(record)
        for w in self._writers.values():
            w.flush()
        return self.snapshot()

    def _on_metrics(self, view: TrainerView, r: dict) -> None:
        try:
            step = int(r["minibatch"])
            view.minibatches += 1
            view.total = int(r.get("total_minibatches", 0))
            view.epoch = int(r.get("epoch", 0))
            view.hit_pct_window = float(r.get("hit_pct_window", 0.0))
            view.rows_window = float(r.get("rows_fetched_window", 0.0))
            view.replacements = int(r.get("replacements", 0))
        except (KeyError, TypeError, ValueError):
            return
        w = self._writer(view.rank)
        if w is not None:
            w.add_scalar("buffer/hit_pct", float(r.get("hit_pct", 0.0)), step)
            w.add_scalar("buffer/hit_pct_window", view.hit_pct_window, step)
            w.add_scalar("comm/rows_fetched", int(r.get("rows_fetched", 0)), step)
            w.add_scalar("buffer/replaced_rows", int(r.get("replaced", 0)), step)
            w.add_scalar("buffer/replacement_rounds", view.replacements, step)

    def _on_decision(self, r: dict) -> None:
        if r.get("final_answer"):  # the rest of an answer already counted at its head
            return
        try:
            rank, step = int(r["trainer"]), int(r["minibatch"])
        except (KeyError, TypeError, ValueError):
            return
        view = self.trainers.setdefault(rank, TrainerView(rank))
        view.decisions += 1
        latency = r.get("latency_s")
        w = self._writer(rank)
        if isinstance(latency, int | float):
            view.latencies.append(float(latency))
            if w is not None:
                w.add_scalar("agent/latency_s", float(latency), step)
        if w is not None:
            w.add_scalar("agent/decisions", view.decisions, step)
            w.add_scalar("agent/replace", int(r.get("decision") == "replace"), step)

    def _writer(self, rank: int) -> Any:
        if self._tb_dir is None:
            return None
        if rank not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[rank] = SummaryWriter(str(self._tb_dir / f"trainer-{rank}"))
        return self._writers[rank]

    def snapshot(self) -> LiveSnapshot:
        views = list(self.trainers.values())
        seen = [v for v in views if v.minibatches]
        latencies = [x for v in views for x in v.latencies]
        return LiveSnapshot(
            done=sum(v.minibatches for v in views),
            total=sum(v.total for v in views),
            epoch=min((v.epoch for v in seen), default=0) + 1,
            epochs=self.epochs,
            hit_pct=statistics.fmean([v.hit_pct_window for v in seen]) if seen else 0.0,
            rows_per_minibatch=statistics.fmean([v.rows_window for v in seen]) if seen else 0.0,
            decisions=sum(v.decisions for v in views),
            latency_p50_s=statistics.median(latencies) if latencies else None,
            rounds=sum(v.replacements for v in views),
        )

    def finish(self) -> None:
        """A last poll, the trainers' epoch times, and every event file closed."""
        self.poll()
        if self._tb_dir is not None:
            for path in sorted((self.out / "trainers").glob("rank-*.json")):
                try:
                    result = json.loads(path.read_text())
                    rank, epochs = int(result["rank"]), result.get("epochs") or []
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                w = self._writer(rank)
                for e in epochs:
                    if isinstance(e, dict) and "epoch" in e and "time_s" in e:
                        w.add_scalar("time/epoch_s", float(e["time_s"]), int(e["epoch"]))
        for w in self._writers.values():
            w.close()
        self._writers.clear()


@contextmanager
def live_view(
    out: Path,
    epochs: int,
    *,
    progress: bool | None = None,
    tensorboard: Path | None = None,
    interval_s: float = POLL_S,
) -> Iterator[RunWatcher | None]:
    """Watch the run in ``out`` while the block runs: a bar on stderr and/or event files.

    ``progress=None`` shows the bar only on a terminal (logs and CI stay clean). Nothing is
    started when there is nothing to show. The view never raises into the run: a failure to
    draw or write is logged once and the view stops.
    """
    show = sys.stderr.isatty() if progress is None else progress
    if not show and tensorboard is None:
        yield None
        return
    from tqdm import tqdm

    watcher = RunWatcher(out, epochs, tensorboard)
    bar = tqdm(total=0, unit="mb", desc="train", disable=not show, dynamic_ncols=True, leave=True)
    stop = threading.Event()

    def draw(snap: LiveSnapshot) -> None:
        if snap.done and not bar.n:  # the rate counts from the first minibatches seen
            bar.reset(total=snap.total or None)
            bar.initial = bar.n = bar.last_print_n = snap.done
        elif snap.total and bar.total != snap.total:
            bar.total = snap.total
        bar.update(max(0, snap.done - bar.n))
        bar.set_postfix_str(snap.postfix(), refresh=True)

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                draw(watcher.poll())
            except Exception as e:  # the view must never take the run down
                log.warning("live view stopped: %s", e)
                return

    thread = threading.Thread(target=loop, name="rudder-live-view", daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        thread.join()
        try:
            watcher.finish()
            draw(watcher.snapshot())
        except Exception as e:
            log.warning("live view: the last update failed: %s", e)
        finally:
            bar.close()
