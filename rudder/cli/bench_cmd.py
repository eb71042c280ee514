"""``rudder bench``: the side-by-side evaluation, from a fresh directory to REPORT.md."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from rudder.cli.common import UserError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="train every variant side by side and write a report with plots",
        description="Run the comparison matrix on one machine: DistDGL as is (none), the "
        "fixed, periodic and static baselines, and Rudder with the LLM agent, the heuristic and "
        "each classifier, at two buffer sizes, on 2 and 4 emulated machines, with and without "
        "1 Gbit/s links; every run's traces replayed with LRU, LFU, S3-FIFO and the offline "
        "bounds; a buffer-size sweep, an out-of-distribution check, sync vs async agents, and "
        "the drift study (locality, eval and temporal workloads on a ring graph cut at random, "
        "each run beside best-static and belady, with the drift measure). "
        "Writes OUT/REPORT.md, OUT/plots/*.png and OUT/results.json. The default matrix takes "
        "about 1.5 hours on 2 cores; --quick about 4 minutes. Run again on the same OUT to "
        "resume.",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="the bench directory (default: runs/bench, or runs/bench-quick with --quick)",
    )
    p.add_argument("--config", type=Path, help="a TOML file over the default (or --quick) matrix")
    p.add_argument("--quick", action="store_true", help="the 4-minute smoke matrix")
    p.add_argument("--fresh", action="store_true", help="redo runs that finished earlier")
    p.add_argument("--dry-run", action="store_true", help="list the runs of the matrix and stop")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write REPORT.md and the plots again from OUT/results.json",
    )
    p.set_defaults(func=run)


def _dry_run(bench) -> int:
    from rudder.cli.common import format_table
    from rudder.evaluation.matrix import workload_slug

    rows = [
        [
            r.id,
            r.label,
            r.setting.dataset,
            workload_slug(r.setting.workload),
            r.setting.machines,
            r.setting.bandwidth or "unshaped",
            r.setting.epochs,
            "-" if r.buffer is None else f"{r.buffer:.0%}",
            ",".join(r.groups),
        ]
        for r in bench.runs
    ]
    headers = ["run", "variant", "graph", "scenario", "machines", "link", "epochs", "buffer"]
    print(format_table([*headers, "groups"], rows))
    print(f"{len(bench.runs)} training runs, plus the classifiers, the sweep and the OOD check")
    return 0


def run(args: argparse.Namespace) -> int:
    from rudder.evaluation.config import ConfigError, load

    if args.out is None:
        args.out = Path("runs/bench-quick" if args.quick else "runs/bench")
    if args.report_only:
        from rudder.evaluation import report

        if not (args.out / "results.json").is_file():
            raise UserError(f"{args.out}: no results.json to report on; run the bench first")
        print(f"wrote {report.write(args.out)}")
        return 0
    try:
        cfg = load(args.config, quick=args.quick)
    except ConfigError as e:
        raise UserError(str(e)) from None

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from rudder.evaluation.pipeline import Bench

    if args.verbose == 0:  # the bench's own lines; the runs' chatter only with -v
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("rudder.evaluation").setLevel(logging.INFO)
    bar = tqdm(total=0, desc="bench", unit="step", dynamic_ncols=True, disable=None)
    bench = Bench(cfg, args.out, fresh=args.fresh, events=lambda line: bar.set_postfix_str(line))
    if args.dry_run:
        bar.close()
        return _dry_run(bench)
    bar.reset(total=bench.steps)

    def step(what: str, line: str) -> None:
        bar.update(1)
        bar.write(line)

    with logging_redirect_tqdm(), contextlib.closing(bar):
        try:
            bench.run(step)
        finally:  # an interrupted or failed bench still reports what it finished
            from rudder.evaluation import report

            if bench.layout.results.is_file():
                path = report.write(bench.layout.root)
                bar.write(f"wrote {path}")
    return 0
