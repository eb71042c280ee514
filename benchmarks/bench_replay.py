"""Replay throughput: how fast each policy runs over a recorded trace.

Uses the trace directory given (default: runs/bench-replay/trace, synthesised with
`rudder trace synth` defaults if missing) and reports remote ids per second per policy.

    .venv/bin/python benchmarks/bench_replay.py [--trace DIR] [--buffer 0.25] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rudder.trainer_hooks.policies import POLICY_NAMES, PolicySpec
from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay
from rudder.trainer_hooks.trace import find_traces, load_trace


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", type=Path, default=Path("runs/bench-replay/trace"))
    ap.add_argument("--buffer", type=float, default=0.25)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    if not args.trace.exists():
        subprocess.run(
            [sys.executable, "-m", "rudder", "-q", "trace", "synth", "--out", str(args.trace)],
            check=True,
        )
    path = find_traces(args.trace)[0]
    t0 = time.perf_counter()
    trace = load_trace(path)
    load_s = time.perf_counter() - t0
    specs = [PolicySpec.parse(n) for n in POLICY_NAMES]
    ctx = context_for(trace, specs)
    config = ReplayConfig(buffer_fraction=args.buffer)
    for s in specs:  # compile (or load cached) kernels outside the timing
        replay(trace, s, config, ctx)
    rows = []
    for s in specs:
        r = replay(trace, s, config, ctx)
        rows.append(
            {
                "policy": str(s),
                "seconds": r.seconds,
                "ids_per_s": r.totals.remote_inputs / r.seconds,
            }
        )
    n = trace.ids.shape[0]
    print(
        f"{path}: {trace.num_minibatches} minibatches, {n:,} remote ids; load {load_s:.2f} s "
        f"({n / load_s / 1e6:.1f} M ids/s); buffer {args.buffer:.0%}"
    )
    for r in rows:
        print(f"  {r['policy']:10s} {r['seconds']:7.3f} s  {r['ids_per_s'] / 1e6:7.1f} M ids/s")
    total = sum(r["seconds"] for r in rows)
    print(f"  all {len(rows)} policies: {total:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"trace": str(path), "remote_ids": n, "load_s": load_s, "policies": rows},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
