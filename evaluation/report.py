"""``REPORT.md`` and the plots, from ``results.json`` alone (``rudder bench --report-only``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rudder.evaluation import plots
from rudder.evaluation.drift_plots import HitsPanel, plot_hits, plot_overlap_profile
from rudder.evaluation.replays import fraction_key
from rudder.evaluation.tables import BlockKey, Row, blocks, in_block, replayed
from rudder.evaluation.targets import check
from rudder.trainer_hooks.scenarios import SCENARIOS

REPLAYED = ("lru", "lfu", "s3fifo", "best-static", "belady", "infinite")


def _cell(v: object, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _performance(rows: list[Row]) -> str:
    return table(
        [
            "variant",
            "runs",
            "epoch s",
            "± (repeats)",
            "speed-up vs none",
            "vs fixed",
            "rows/epoch",
            "MiB/epoch",
            "rows vs none",
            "vs fixed",
            "%-hits",
            "rows vs belady",
            "vs best-static",
        ],
        [
            [
                r.label,
                r.runs,
                r.epoch_s,
                r.epoch_spread_s,
                r.speedup_vs_none,
                r.speedup_vs_fixed,
                f"{r.rows_per_epoch:,.0f}",
                f"{r.mb_per_epoch:.1f}",
                r.comm_vs_none,
                r.comm_vs_fixed,
                f"{r.hit_pct:.1f}",
                r.rows_vs_belady,
                r.rows_vs_best_static,
            ]
            for r in rows
        ],
    )


def _decisions(rows: list[Row]) -> str:
    rows = [r for r in rows if r.decisions or r.variant.startswith("rudder:")]
    if not rows:
        return ""
    return table(
        [
            "variant",
            "decisions",
            "replace %",
            "interval (minibatches)",
            "valid %",
            "Pass@1 %-hits",
            "best constant",
            "Pass@1 comm",
            "latency p50 s",
        ],
        [
            [
                r.label,
                f"{r.decisions:.0f}",
                _cell(r.replace_pct, ".0f"),
                _cell(r.interval, ".1f"),
                _cell(r.valid_pct, ".1f"),
                _pct(r.pass_hits),
                _pct(r.pass_best_constant),
                _pct(r.pass_comm),
                _cell(r.latency_s, ".3f"),
            ]
            for r in rows
        ],
    )


def _replayed(records: list[dict], key: BlockKey) -> tuple[str, dict]:
    rep = replayed(records, key, ("none", *REPLAYED))
    if not rep:
        return "", rep
    text = table(
        ["replayed policy", "rows vs none", "%-hits", "traces"],
        [[p, v["rows_vs_none"], f"{v['hit_pct']:.1f}", v["runs"]] for p, v in rep.items()],
    )
    return text, rep


def _targets(checks) -> str:
    if not checks:
        return "No run of this bench measures the targets (they need `rudder:llm` runs)."
    mark = {True: "met", False: "**not met**", None: "not measurable"}
    return table(
        ["target", "where", "measured", "verdict"],
        [[c.target, c.where, c.measured, mark[c.met]] for c in checks],
    )


def _sync(records: list[dict]) -> str:
    recs = [r for r in records if r.get("ok") and r["run"]["mode"]]
    pairs: dict[tuple, set] = {}
    for r in recs:
        run = r["run"]
        pairs.setdefault(
            (run["variant"], run["machines"], run["bandwidth"], run["epochs"], run["buffer"]), set()
        ).add(run["mode"])
    both = {k for k, modes in pairs.items() if modes == {"async", "sync"}}
    rows = []
    for r in recs:
        run, s = r["run"], r["summary"]
        key = (run["variant"], run["machines"], run["bandwidth"], run["epochs"], run["buffer"])
        if key not in both:
            continue
        a = s["agent"]
        rows.append(
            [
                run["variant"],
                run["mode"],
                f"{run['machines']} m, {run['bandwidth'] or 'unshaped'}, {run['epochs']} ep, "
                f"{run['buffer']:.0%}",
                s["epoch_time_s"],
                f"{100 * s['hit_rate']:.1f}",
                f"{s['rows_fetched_per_epoch']:,.0f}",
                s.get("decisions"),
                _cell(s.get("replacement_interval"), ".1f"),
                _cell(a.get("replace_pct"), ".0f"),
                _cell(a.get("valid_pct"), ".1f"),
                _pct(a.get("pass_at_1_hits")),
                _pct(a.get("pass_at_1_comm")),
                _cell(a.get("latency_p50_s"), ".2f"),
            ]
        )
    if not rows:
        return "No variant ran in both modes."
    rows.sort(key=lambda row: (row[0], row[2], row[1]))
    return table(
        [
            "variant",
            "mode",
            "setting",
            "epoch s",
            "%-hits",
            "rows/epoch",
            "decisions",
            "interval",
            "replace %",
            "valid %",
            "Pass@1 %-hits",
            "Pass@1 comm",
            "latency p50 s",
        ],
        rows,
    )


def _ood(ood: dict | None) -> str:
    if not ood or "skipped" in ood:
        return f"Skipped: {(ood or {}).get('skipped', 'not run')}."
    parts = []
    for name, g in ood.items():
        if "failed" in g:
            parts.append(f"**{name}**: the training run failed ({g['failed']}).")
            continue
        bounds = g["bounds"]
        rows = []
        for d, v in g["deciders"].items():
            t, a = v["totals"], v["agent"]
            acc = g["accuracy"].get(d, {})
            rows.append(
                [
                    d,
                    f"{100 * t['hits'] / max(1, t['remote_inputs']):.1f}",
                    t["rows_fetched"] / bounds["none"]["rows_fetched"],
                    t["rows_fetched"] / bounds["belady"]["rows_fetched"],
                    t["rows_fetched"] / bounds["best-static"]["rows_fetched"],
                    v["decisions"],
                    _cell(v["replacement_interval"], ".1f"),
                    _cell(v["replace_pct"], ".0f"),
                    _cell(a.get("valid_pct"), ".1f"),
                    _pct(a.get("pass_at_1_hits")),
                    _cell(acc.get("accuracy"), ".3f"),
                    _cell(a.get("latency_p50_s"), ".3f"),
                ]
            )
        parts.append(
            f"**{name}**: {g['graph']}, batch size {g['batch_size']}, {g['trainers']} trainers, "
            f"{g['minibatches']} minibatches, buffer {g['buffer']:.0%}\n\n"
            + table(
                [
                    "decider",
                    "%-hits",
                    "rows vs none",
                    "vs belady",
                    "vs best-static",
                    "decisions",
                    "interval",
                    "replace %",
                    "valid %",
                    "Pass@1 %-hits",
                    "label accuracy",
                    "latency p50 s",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def _classifiers(reports: dict | None) -> str:
    if not reports or "skipped" in reports:
        return f"Skipped: {(reports or {}).get('skipped', 'not run')}."
    if "failed" in reports:
        return f"**Training failed**: {reports['failed']}"
    return table(
        ["model", "samples", "good %", "train acc", "test acc", "balanced", "majority"],
        [
            [
                k,
                r["samples"],
                f"{100 * r['good'] / max(1, r['samples']):.0f}",
                r["train_accuracy"],
                r["test_accuracy"],
                r["test_balanced_accuracy"],
                r["majority_baseline"],
            ]
            for k, r in reports.items()
        ],
    )


def _sweep(sweep: dict | None) -> str:
    if not sweep or "rows" not in sweep:
        return f"Skipped: {(sweep or {}).get('skipped', 'not run')}."
    rows = sweep["rows"]
    fractions = sorted(rows, key=float)
    policies = [p for p in next(iter(rows.values())) if p != "none"]
    return table(
        ["policy", *[f"{float(f):.0%}" for f in fractions]],
        [
            [p, *[rows[f][p]["rows_fetched"] / rows[f]["none"]["rows_fetched"] for f in fractions]]
            for p in policies
        ],
    )


def _drift_measure(rec: dict, buffer: float) -> dict | None:
    return ((rec.get("drift") or {}).get("by_buffer") or {}).get(fraction_key(buffer))


def _measure_line(records: list[dict], key: BlockKey) -> str:
    """The drift measure of the block's `none` run (else of its first run that has one)."""
    recs = [r for r in records if r.get("ok") and in_block(r["run"], key)]
    recs.sort(key=lambda r: r["run"]["buffer"] is not None)
    rec = next((r for r in recs if _drift_measure(r, key.buffer)), None)
    if rec is None:
        return "No drift measure (the block's runs kept none)."
    d, w = _drift_measure(rec, key.buffer), rec["drift"]["window"]
    lags = ", ".join(f"{k}: {v:.3f}" for k, v in d["lag_overlaps"].items() if v is not None)
    bursts = d["bursts"]
    burst_text = (
        f"{len(bursts)} burst(s), the longest {max(b['length'] for b in bursts)} minibatches"
        if bursts
        else "no bursts"
    )
    return (
        f"Drift measure (trainer 0 of `{rec['run']['id']}`, {d['minibatches']} minibatches, "
        f"window {w}): **{d['verdict']}** ({d['reason']}); best-static / belady gap "
        f"**{d['gap']:.2f}** ({d['best_static_rows']:,} vs {d['belady_rows']:,} rows, "
        f"{d['capacity']:,} slots); lag overlaps {lags}; {burst_text}."
    )


def _drift_table(rows: list[Row], records: list[dict], key: BlockKey) -> str:
    out = [
        [
            r.label,
            f"{r.rows_per_epoch:,.0f}",
            r.rows_vs_none_all,
            r.rows_vs_best_static,
            r.rows_vs_belady,
            f"{r.hit_pct:.1f}",
            r.epoch_s,
            f"{r.decisions:.0f}",
            _cell(r.replace_pct, ".0f"),
        ]
        for r in rows
    ]
    rep = replayed(records, key, ("best-static", "belady"))
    for p, v in rep.items():  # the bounds, replayed on the block's traces
        out.append(
            [
                f"*{p}* (offline, replayed)",
                "-",
                v["rows_vs_none"],
                v["rows_vs_none"] / rep["best-static"]["rows_vs_none"]
                if "best-static" in rep
                else None,
                v["rows_vs_none"] / rep["belady"]["rows_vs_none"] if "belady" in rep else None,
                f"{v['hit_pct']:.1f}",
                None,
                None,
                None,
            ]
        )
    return table(
        [
            "variant",
            "rows/epoch",
            "rows vs none",
            "vs best-static",
            "vs belady",
            "%-hits",
            "epoch s",
            "decisions",
            "replace %",
        ],
        out,
    )


def _drift_order(key: BlockKey) -> tuple:
    name = key.scenario.split("-")[0].rstrip("0123456789")
    rank = SCENARIOS.index(name) if name in SCENARIOS else len(SCENARIOS)
    return (key.dataset, rank, key.scenario, key.machines, key.bandwidth, key.epochs, key.buffer)


def _hits_panels(rows: list[Row], records: list[dict], runs_dir: Path) -> list[HitsPanel]:
    by_id = {r["run"]["id"]: r for r in records}
    panels = []
    for row in rows:
        if row.variant == "none":  # nothing is ever a hit
            continue
        rec = by_id[row.ids[0]]
        spans = (rec.get("drift") or {}).get("eval_spans") or ()
        panels.append(HitsPanel(row.label, plots.run_metrics(runs_dir / row.ids[0]), spans))
    return panels


def _overlap_profiles(records: list[dict]) -> tuple[dict, int | None]:
    """The overlap profile of each workload's `none` run (repeat 0), the main reference's too."""
    profiles: dict[str, list] = {}
    window = None
    for r in records:
        run, d = r["run"], r.get("drift") or {}
        if not r.get("ok") or run["buffer"] is not None or not d.get("overlap_profile"):
            continue
        ds, sc = run.get("dataset", "main"), run.get("scenario", "stationary")
        label = f"{ds} graph, {sc}" + (" (reference)" if ds == "main" else "")
        if label not in profiles:
            profiles[label] = [float("nan") if v is None else v for v in d["overlap_profile"]]
            window = window or d.get("window")
    return profiles, window


def _drift(results: dict, records: list[dict], blks: dict, root: Path) -> list[str]:
    """The Drift section: per workload and buffer size, every variant beside the bounds."""
    keys = sorted((k for k in blks if k.drifts), key=_drift_order)
    if not keys:
        return [
            'No run of this bench has a drifting workload (a group with `dataset = "drift"` '
            "or a scenario other than stationary).",
            "",
        ]
    out = []
    dd = results["config"].get("drift_data")
    if dd:
        g = dd["dataset"]["graph"]
        out += [
            f"The drift graph: a {g['nodes']:,}-node `{g['family']}` graph (average degree "
            f"{g['avg_degree']:g}, locality scale {g.get('locality_scale', 0):g}), "
            f"{dd['dataset']['feat_dim']} features, train fraction "
            f"{dd['dataset']['train_fraction']:g}, cut into partitions by `{dd['partition']}`, "
            f"batch {dd['batch_size']}. Its locality crosses partitions, so locality-ordered or "
            "time-windowed minibatches move the rows worth buffering (docs/traces.md, "
            '"Scenarios").',
            "",
        ]
    out += [
        "`rows vs none`, `vs best-static` and `vs belady` divide a run's rows (all epochs, "
        "summed over trainers) by those of the policy replayed on the run's own traces; "
        "`rows/epoch` and `epoch s` are the live run's (the last 80% of epochs). The offline "
        "rows are the bounds replayed on the block's traces. %-hits plots: trainer 0, "
        "evaluation minibatches shaded, replacement rounds as red ticks.",
        "",
    ]
    ref = next(
        (
            r
            for r in records
            if r.get("ok") and r["run"].get("dataset", "main") == "main" and r.get("drift")
        ),
        None,
    )
    if ref is not None:
        d = next(iter(ref["drift"]["by_buffer"].values()), None)
        if d:
            out += [
                f"For contrast, the main graph's reference run `{ref['run']['id']}` at buffer "
                f"{d['buffer_fraction']:.0%}: **{d['verdict']}**, gap {d['gap']:.2f}.",
                "",
            ]
    profiles, window = _overlap_profiles(records)
    drawn = plot_overlap_profile(
        profiles,
        root / "plots" / "drift_overlap.png",
        window=window,
        smooth=5,
        title="overlap profile of each workload's `none` run (trainer 0)",
    )
    if drawn:
        out += [f"![overlap profiles](plots/{drawn.name})", ""]
    for key in keys:
        rows = blks[key]
        out += [
            f"### {key.label}",
            "",
            _measure_line(records, key),
            "",
            _drift_table(rows, records, key),
            "",
        ]
        fig = plot_hits(
            _hits_panels(rows, records, root / "runs"),
            root / "plots" / f"drift-hits-{key.slug}.png",
            title=f"%-hits over minibatches: {key.label}",
        )
        if fig:
            out += [f"![%-hits over minibatches, {key.label}](plots/{fig.name})", ""]
    return out


def _failures(records: list[dict]) -> str:
    bad = [r for r in records if not r.get("ok")]
    if not bad:
        return "None."
    lines = []
    for r in bad:
        lines.append(f"- `{r['run']['id']}`: {r['reason']}")
        for p in r.get("failed", []):
            lines.append(f"  - {p['process']} ({p['exit']}), log `{p['log']}`")
    return "\n".join(lines)


def _drifts(run: dict) -> bool:
    return run.get("dataset", "main") != "main" or run.get("scenario", "stationary") != (
        "stationary"
    )


def _drift_graph_line(cfg: dict, records: list[dict]) -> list[str]:
    dd = cfg.get("drift_data")
    if not dd or not any(r["run"].get("dataset") == "drift" for r in records):
        return []
    g = dd["dataset"]["graph"]
    return [
        f"- drift graph: {g['nodes']:,} nodes ({g['family']}), average degree "
        f"{g['avg_degree']:g}, {dd['dataset']['feat_dim']} features; {dd['partition']} "
        f"partition, batch {dd['batch_size']}"
    ]


def write(root: Path) -> Path:
    """Render ``root/REPORT.md`` and ``root/plots/*.png`` from ``root/results.json``."""
    results = json.loads((root / "results.json").read_text())
    records = results["runs"]
    all_blocks = blocks(records)
    blks = {k: v for k, v in all_blocks.items() if not k.drifts}  # side by side
    main = [r for r in records if not _drifts(r["run"])]
    cfg, m = results["config"], results["machine"]
    figs = root / "plots"
    bounds = {key: replayed(records, key, ("none", "best-static", "belady")) for key in blks}
    drawn = {
        "trajectory": plots.trajectory(main, root / "runs", figs / "trajectory.png"),
        "epoch_time": plots.per_block(blks, figs / "epoch_time.png", "epoch"),
        "communication": plots.per_block(blks, figs / "communication.png", "rows", bounds),
        "buffer_sweep": plots.sweep(results.get("sweep"), figs / "buffer_sweep.png"),
        "ood": plots.ood(results.get("ood"), figs / "ood.png"),
    }

    def fig(name: str, caption: str) -> str:
        p = drawn.get(name)
        return f"![{caption}](plots/{p.name})\n" if p else ""

    ok = sum(1 for r in records if r.get("ok"))
    reused = sum(1 for r in records if r.get("reused"))
    run_min = sum(r.get("wall_s", 0.0) for r in records) / 60
    shaping = results["shaping"]
    out = [
        f"# Rudder bench: {cfg['name']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}",
        f"- started {results['started']}, finished {results.get('finished', '(not finished)')}",
        f"- runs: {ok} of {len(records)} finished, {run_min:.0f} minutes of training and "
        f"replay in all"
        + (f" ({reused} reused from an earlier invocation)" if reused else "")
        + "; link shaping: "
        + ("available" if shaping is True else f"unavailable ({shaping}), links ran unshaped"),
        f"- graph: {cfg['dataset']['graph']['nodes']:,} nodes, average degree "
        f"{cfg['dataset']['graph']['avg_degree']:g}, {cfg['dataset']['feat_dim']} features; "
        f"batch {cfg['train']['batch_size']}, fanouts {cfg['train']['fanouts']}, "
        f"{cfg['train']['trainers']} trainer(s) per machine",
        *_drift_graph_line(cfg, records),
        f"- LLM: {cfg['llm']['model'] or 'the default model'}, prompt "
        f"{cfg['llm']['prompt'] or 'the default'}, at {cfg['llm']['url']}",
        "",
        "Epoch time is the mean over the last 80% of epochs (± is the standard deviation over "
        "repeats); rows and MiB are per epoch over the same epochs, summed over trainers. "
        "`rows vs belady` / `vs best-static` compare all epochs' rows with the offline bounds "
        "replayed on the run's own traces. Pass@1 counts a decision when its predicted "
        "direction of %-hits matched what happened next.",
        "",
        "## Targets",
        "",
        _targets(check(all_blocks, records)),
        "",
        "## Side by side",
        "",
        fig("epoch_time", "epoch time per variant"),
        fig("communication", "rows fetched per variant, relative to none"),
    ]
    if not blks:
        out += ["No block on the main graph's stationary workload.", ""]
    for key, rows in blks.items():
        out += [f"### {key.label}", "", _performance(rows), ""]
        dec = _decisions(rows)
        if dec:
            out += [dec, ""]
        rep, _ = _replayed(records, key)
        if rep:
            out += ["Replayed on the same traces:", "", rep, ""]
    out += ["## Drift", "", *_drift(results, records, all_blocks, root)]
    out += [
        "## %-hits over training: the LLM agent and a classifier",
        "",
        fig("trajectory", "%-hits over minibatches with replacement rounds"),
        "## Synchronous vs asynchronous agents",
        "",
        _sync(records),
        "",
        "## Out of distribution",
        "",
        _ood(results.get("ood")),
        "",
        fig("ood", "%-hits per decider, seen and unseen graph"),
        "## Classifiers (trained by the bench on the reference run's traces)",
        "",
        _classifiers(results.get("classifiers")),
        "",
        "## Buffer-size sweep (replay, rows fetched relative to none)",
        "",
        _sweep(results.get("sweep")),
        "",
        fig("buffer_sweep", "rows fetched against buffer size"),
        "## Failed runs",
        "",
        _failures(records),
        "",
        "Raw numbers: `results.json`; each run's directory under `runs/` holds its "
        "`summary.json`, logs and per-minibatch metrics.",
        "",
    ]
    path = root / "REPORT.md"
    path.write_text("\n".join(out))
    return path
