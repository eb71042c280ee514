"""``rudder bench``, start to end: inputs, the matrix, the studies, ``results.json``.

One loop over the matrix, each run a real DistDGL training (``rudder train``) followed by
replays of its traces. The first `none` run on the main graph's stationary workload is the
*reference*: its traces teach the classifiers (before the first classifier variant trains) and
feed the buffer-size sweep. The drift study's `none` runs (the drift graph, the scenarios) are
*drift references*: their traces teach the classifiers too, and every run of the drift study
keeps the drift measure of its traces. The out-of-distribution check trains two more `none`
runs (the bench graph again, and another graph) and replays the deciders over their traces.
``results.json`` is rewritten after every step, so an interrupted bench leaves everything it
finished; run it again on the same directory and finished runs are reused (``fresh=True``
redoes them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rudder.evaluation import data
from rudder.evaluation.classifiers import teach, train_all
from rudder.evaluation.config import BenchConfig
from rudder.evaluation.matrix import Run, Setting, buffers_of, expand, workload_knobs
from rudder.evaluation.replays import load_all, replay_all
from rudder.evaluation.runs import TrainSetup, execute, finished
from rudder.evaluation.variants import CLASSIFIER_KINDS, Variant, is_llm

log = logging.getLogger(__name__)

Events = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a bench writes what."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def classifiers(self) -> Path:
        return self.root / "classifiers"

    @property
    def ood(self) -> Path:
        return self.root / "ood"

    def graph(self, name: str) -> Path:
        return self.root / "data" / name

    def parts(self, name: str, machines: int) -> Path:
        return self.root / "data" / f"{name}-parts{machines}"


DRIFT_GRAPH = "drift-graph"  # the drift graph's directory under data/ (the main one: "graph")


def machine_info() -> dict:
    """The machine the numbers come from."""
    import psutil

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fingerprint(
    cfg: BenchConfig,
    variant: Variant | None = None,
    setting: Setting | None = None,
    **extra: object,
) -> str:
    """What a finished run's numbers depend on besides its own axes.

    The data, the training and the replayed policies for every run; the LLM settings only for
    runs the LLM decides, the classifier settings (and the drift references they also learn
    from) only for runs a bench classifier decides (so trying another prompt redoes the LLM
    runs alone); ``setting``'s graph and scenario (the drift graph replaces the main one);
    ``extra``: what else a run depends on.
    """
    d = cfg.to_dict()
    key = {k: d[k] for k in ("dataset", "train")}
    key["replay"] = d["replay"]["policies"]
    if setting is not None and setting.dataset == "drift":
        key["dataset"] = d["drift_data"]
    if setting is not None and setting.drifts:  # main stationary runs keep their old key
        key["data"] = setting.dataset
        key["scenario"] = {"name": setting.workload.name, **workload_knobs(setting.workload)}
    if variant is not None and variant.is_llm:
        key["llm"] = d["llm"]
    if variant is None or variant.classifier_kind:
        key["classifiers"] = d["classifiers"]
        refs = sorted({r.setting.slug for r in expand(cfg) if _drift_reference(r)})
        if refs:
            key["drift_references"] = {"data": d["drift_data"], "settings": refs}
    key.update(extra)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _drift_reference(run: Run) -> bool:
    """A `none` run of the drift study that the classifiers learn from."""
    return not run.variant.buffered and run.setting.drifts and run.repeat == 0


def _uses_llm(cfg: BenchConfig, runs: list[Run]) -> bool:
    return any(r.variant.is_llm for r in runs) or (
        cfg.ood.enabled and any(is_llm(d) for d in cfg.ood.deciders)
    )


@contextlib.contextmanager
def _llm(cfg: BenchConfig, needed: bool, log_file: Path):
    """One LLM server for the whole bench (started here unless one answers), niced."""
    if not needed:
        yield
        return
    from rudder.llm.embedded import answers, llm_available

    if not answers(cfg.llm.url):
        from rudder.llm.models import DEFAULT_MODEL, fetch

        fetch(cfg.llm.model or DEFAULT_MODEL)  # a verified install is reused
    with llm_available(cfg.llm.url, cfg.llm.model, nice=10, log_file=log_file):
        yield


class Bench:
    """One bench: the config, where it writes, and the results so far."""

    def __init__(self, cfg: BenchConfig, out: Path, *, fresh: bool = False, events: Events):
        from rudder.launcher.netns import EmulatedCluster

        self.cfg = cfg
        self.layout = Layout(out.resolve())
        self.fresh = fresh
        self.emit = events
        self.shaping, why = EmulatedCluster.available()
        if not self.shaping:
            log.warning("no link shaping here (%s): shaped links run unshaped", why)
        self.runs = expand(cfg, shaping=self.shaping)
        self.results: dict = {
            "config": cfg.to_dict(),
            "machine": machine_info(),
            "shaping": self.shaping or why,
            "started": _now(),
            "runs": [],
            "classifiers": None,
            "sweep": None,
            "ood": None,
        }
        nones = [r for r in self.runs if not r.variant.buffered]
        self.reference: Run | None = next(
            (r for r in nones if not r.setting.drifts), nones[0] if nones else None
        )
        self.drift_references = [
            r for r in self.runs if _drift_reference(r) and r != self.reference
        ]

    @property
    def steps(self) -> int:
        """Progress steps: each run, the classifiers, the sweep, the OOD check."""
        return len(self.runs) + 3

    def save(self) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.results.write_text(json.dumps(self.results, indent=2) + "\n")

    # -- inputs ------------------------------------------------------------------------------

    def partitions(self, name: str, spec, machines: int, method: str = "metis") -> Path:
        graph = data.graph(spec, self.layout.graph(name))
        return data.partitions(graph, machines, self.layout.parts(name, machines), method)

    def inputs(self, setting: Setting) -> tuple[Path, int]:
        """The partitions a setting's runs train on, and their batch size."""
        if setting.dataset == "drift":
            d = self.cfg.drift_data
            parts = self.partitions(DRIFT_GRAPH, d.dataset, setting.machines, d.partition)
            return parts, d.batch_size
        parts = self.partitions("graph", self.cfg.dataset, setting.machines)
        return parts, self.cfg.train.batch_size

    def setup(self, partitions: Path, out: Path, **changes) -> TrainSetup:
        t, llm = self.cfg.train, self.cfg.llm
        base = {
            "partitions": partitions,
            "out": out,
            "batch_size": t.batch_size,
            "fanouts": t.fanouts,
            "trainers": t.trainers,
            "seed": t.seed,
            "timeout_s": t.timeout_s,
            "classifier_dir": self.layout.classifiers,
            "agent_options": {
                k: v
                for k, v in {
                    "llm_url": llm.url,
                    "llm_model": llm.model,
                    "prompt": llm.prompt,
                }.items()
                if v is not None
            },
        }
        return TrainSetup(**{**base, **changes})

    # -- the matrix --------------------------------------------------------------------------

    def run_one(self, run: Run) -> dict:
        out = self.layout.runs / run.id
        references = run == self.reference or run in self.drift_references
        keep = references or self.cfg.replay.keep_traces
        fp = fingerprint(self.cfg, run.variant, run.setting)
        if not self.fresh:
            rec = finished(run, out, fp)
            if rec and (not keep or (out / "trace").is_dir()):
                return {**rec, "reused": True}
        parts, batch_size = self.inputs(run.setting)
        fractions = (
            [run.buffer] if run.buffer is not None else buffers_of(self.runs, run.setting) or [0.25]
        )
        measured = run.setting.drifts or run == self.reference  # the reference: for contrast
        return execute(
            run,
            self.setup(parts, out, batch_size=batch_size),
            fractions=fractions,
            policies=self.cfg.replay.policies,
            keep_trace=keep,
            fingerprint=fp,
            drift_window=self.cfg.drift_data.window if measured else None,
        )

    def train_classifiers(self) -> dict:
        """Teach the bench's classifiers from the reference runs' traces (reused if current).

        The main reference's traces at every buffer size of the matrix, and each drift
        reference's at the buffer sizes of its setting: the classifiers see drifting workloads.
        """
        kinds = sorted({v.classifier_kind for v in self.cfg.variants() if v.classifier_kind})
        if self.cfg.ood.enabled:
            kinds = sorted(set(kinds) | {d for d in self.cfg.ood.deciders if d in CLASSIFIER_KINDS})
        if not kinds:
            return {"skipped": "no classifier in the matrix"}
        ref = self._reference_traces()
        if ref is None:
            return {"skipped": "classifiers learn from a `none` run's traces: add `none`"}
        drift = [(r, p) for r in self.drift_references if (p := self._traces_of(r)) is not None]
        marker = self.layout.classifiers / "training.json"
        key = {"fingerprint": fingerprint(self.cfg), "kinds": kinds, "reference": self.reference.id}
        if drift:
            key["drift_references"] = [r.id for r, _ in drift]
        if not self.fresh and marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("key") == key and all(
                (self.layout.classifiers / f"{k}.joblib").is_file() for k in kinds
            ):
                return done["reports"]
        fractions = sorted({r.buffer for r in self.runs if r.buffer is not None}) or [0.25]
        teachers, where = self.cfg.classifiers.teachers, self.layout.classifiers / "metrics"
        metrics = teach(load_all(ref), fractions, teachers, where)
        for run, path in drift:
            self.emit(f"classifiers: teaching from {run.id}")
            sizes = buffers_of(self.runs, run.setting) or fractions
            metrics += teach(load_all(path), sizes, teachers, where / run.id)
        try:
            reports = train_all(kinds, metrics, self.cfg.classifiers, self.layout.classifiers)
        except ValueError as e:  # e.g. too few labelled rounds in a short reference run
            log.warning("the classifiers could not be trained: %s", e)
            return {"failed": str(e)}
        marker.write_text(json.dumps({"key": key, "reports": reports}, indent=2) + "\n")
        return reports

    def _reference_traces(self) -> Path | None:
        return None if self.reference is None else self._traces_of(self.reference)

    def _traces_of(self, run: Run) -> Path | None:
        path = self.layout.runs / run.id / "trace"
        return path if path.is_dir() else None

    # -- studies -----------------------------------------------------------------------------

    def sweep(self) -> dict:
        ref = self._reference_traces()
        if ref is None:
            return {"skipped": "the sweep replays a `none` run's traces: add `none`"}
        s = self.cfg.sweep
        return {
            "reference": self.reference.id,
            "rows": replay_all(load_all(ref), s.buffers, ("none", *s.policies)),
        }

    def ood(self) -> dict:
        from rudder.evaluation.ood import evaluate_on

        o = self.cfg.ood
        if not o.enabled:
            return {"skipped": "disabled"}
        if self.reference is None:
            return {"skipped": "the OOD check needs a `none` run (and its classifiers)"}
        setting = Setting(
            self.reference.setting.machines, self.reference.setting.bandwidth, o.epochs
        )
        out = {}
        for name, dataset_name, spec, batch in (
            ("seen", "graph", self.cfg.dataset, self.cfg.train.batch_size),
            ("unseen", "ood-graph", o.dataset, o.batch_size),
        ):
            run = Run(Variant("none"), setting, None, None, 0, ("ood",))
            run_dir = self.layout.ood / f"{name}-run"
            parts = self.partitions(dataset_name, spec, setting.machines)
            spec_key = dataclasses.asdict(spec)  # the unseen graph is not in [dataset]
            fp = fingerprint(self.cfg, run.variant, ood=[name, spec_key, batch, o.epochs])
            rec = None if self.fresh else finished(run, run_dir, fp)
            if rec is None or not (run_dir / "trace").is_dir():
                self.emit(f"ood {name}: training `none` on {dataset_name} (batch {batch})")
                setup = self.setup(
                    parts, run_dir, batch_size=batch, seed=self.cfg.train.seed + 1000
                )
                rec = execute(
                    run,
                    setup,
                    fractions=[],
                    policies=(),
                    keep_trace=True,
                    fingerprint=fp,
                )
            if not rec["ok"]:
                out[name] = {"failed": rec["reason"]}
                continue
            out[name] = evaluate_on(
                name,
                load_all(run_dir / "trace"),
                self.cfg,
                self.layout.classifiers,
                self.layout.ood,
                self.emit,
            )
        return out

    # -- everything --------------------------------------------------------------------------

    def run(self, on_step: Callable[[str, str], None]) -> dict:
        """The whole bench; ``on_step(what, line)`` after each step."""
        self.save()
        classifiers_needed = any(r.variant.classifier_kind for r in self.runs)
        with _llm(self.cfg, _uses_llm(self.cfg, self.runs), self.layout.root / "llm-server.log"):
            for run in self.runs:
                if run.variant.classifier_kind and self.results["classifiers"] is None:
                    self.results["classifiers"] = self.train_classifiers()
                    on_step("classifiers", _classifier_line(self.results["classifiers"]))
                self.emit(f"training {run.id}")
                failed = (self.results["classifiers"] or {}).get("failed")
                if run.variant.classifier_kind and failed:
                    rec = {"run": run.to_dict(), "ok": False, "wall_s": 0.0}
                    rec["reason"] = f"no {run.variant.classifier_kind} model: {failed}"
                else:
                    rec = self.run_one(run)
                self.results["runs"].append(rec)
                self.save()
                on_step(run.id, describe(rec))
            if self.results["classifiers"] is None:
                self.results["classifiers"] = (
                    self.train_classifiers()
                    if self.cfg.ood.enabled or classifiers_needed
                    else {"skipped": "no classifier in the matrix"}
                )
                on_step("classifiers", _classifier_line(self.results["classifiers"]))
            self.results["sweep"] = self.sweep()
            self.save()
            on_step("sweep", "buffer-size sweep replayed")
            self.results["ood"] = self.ood()
            self.save()
            on_step("ood", "out-of-distribution check done")
        self.results["finished"] = _now()
        self.save()
        return self.results


def _classifier_line(reports: dict) -> str:
    if "failed" in reports or "skipped" in reports:
        return f"classifiers: {reports.get('failed') or reports.get('skipped')}"
    accs = ", ".join(f"{k} {r['test_accuracy'] or 0:.2f}" for k, r in reports.items())
    return f"classifiers trained (held-out accuracy: {accs})"


def describe(rec: dict) -> str:
    """One line about a finished run."""
    r = rec["run"]
    head = f"{r['id']}: "
    if not rec["ok"]:
        return head + f"FAILED ({rec['reason']})"
    s = rec["summary"]
    line = (
        head + f"epoch {s['epoch_time_s']:.3f} s, {s['rows_fetched_per_epoch']:,.0f} rows/epoch, "
        f"{100 * s['hit_rate']:.1f}% hits"
    )
    if s.get("decisions"):
        line += f", {s['decisions']} decisions"
    drift = (rec.get("drift") or {}).get("by_buffer") or {}
    if drift and not r["buffer"]:
        d = next(iter(drift.values()))
        line += f", drift measure: {d['verdict']} (gap {d['gap']:.2f})"
    return line + f" ({rec['wall_s']:.0f} s)"
