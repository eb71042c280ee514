"""Real DistDGL training: the baselines against Rudder on emulated machines.

For each machine count (2, 4) and link (unshaped, 1 Gbit/s), trains `none` (DistDGL as is),
`fixed`, `periodic` and `rudder` (heuristic decider) at a 25% buffer and reports epoch time,
rows fetched per epoch and %-hits. It also measures the hook's cost at 0% hits: `rudder` with
the `never` decider keeps its buffer empty, so every minibatch pays the lookup and gets
nothing back; the cost is the per-minibatch hook time over the per-minibatch step time.

    .venv/bin/python benchmarks/bench_train.py [--nodes 100000] [--out runs/bench-train]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rudder.launcher.train import TrainConfig, run

POLICIES = (
    ("none", "heuristic"),
    ("fixed", "heuristic"),
    ("periodic", "heuristic"),
    ("rudder", "heuristic"),
)


def rudder_cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "rudder", "-q", *map(str, args)], check=True)


def prepare(out: Path, nodes: int, parts: int) -> Path:
    graph = out / "graph"
    if not (graph / "meta.json").exists():
        rudder_cli(
            "graph",
            "generate",
            "--nodes",
            nodes,
            "--avg-degree",
            20,
            "--communities",
            32,
            "--feat-dim",
            100,
            "--classes",
            16,
            "--out",
            graph,
        )
    dest = out / f"parts{parts}"
    if not (dest / "rudder.json").exists():
        rudder_cli("graph", "partition", "--graph", graph, "--parts", parts, "--out", dest)
    return dest


def hook_overhead(run_dir: Path) -> dict:
    """Mean hook time per minibatch relative to the mean step (epoch time / minibatches)."""
    steps = [
        json.loads(line)
        for f in sorted((run_dir / "trainers").glob("steps-rank-*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    steps = [s for s in steps if s["epoch"] > 0]  # the first epoch loads kernels and caches
    summary = json.loads((run_dir / "summary.json").read_text())
    per_mb = summary["epoch_time_s"] / (
        len(steps) / len(summary["trainers"]) / (summary["epochs"] - 1)
    )
    hook = statistics.mean(s["hook_s"] for s in steps)
    return {
        "hook_ms": 1e3 * hook,
        "step_ms": 1e3 * per_mb,
        "hook_pct_of_step": 100 * hook / per_mb,
        "hits": sum(s["hits"] for s in steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--machines", default="2,4")
    ap.add_argument("--bandwidths", default="none,1gbit")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for machines in (int(m) for m in args.machines.split(",")):
        parts = prepare(args.out, args.nodes, machines)
        for bw in args.bandwidths.split(","):
            bandwidth = None if bw == "none" else bw
            for policy, decider in POLICIES:
                name = f"m{machines}-{bw}-{policy}"
                t0 = time.perf_counter()
                s = run(
                    TrainConfig(
                        partitions=parts,
                        out=args.out / name,
                        machines=machines,
                        epochs=args.epochs,
                        policy=policy,
                        decider=decider,
                        buffer=0.25,
                        bandwidth=bandwidth,
                        cluster="netns",
                    )
                )
                results.append(
                    {
                        "run": name,
                        "machines": machines,
                        "bandwidth": bw,
                        "policy": policy,
                        "epoch_time_s": s["epoch_time_s"],
                        "rows_fetched_per_epoch": s["rows_fetched_per_epoch"],
                        "hit_rate": s["hit_rate"],
                        "wall_s": time.perf_counter() - t0,
                    }
                )
                print(
                    f"{name:24s} epoch {s['epoch_time_s']:.3f} s  rows/epoch "
                    f"{s['rows_fetched_per_epoch']:>10,.0f}  hits {100 * s['hit_rate']:5.1f}%",
                    flush=True,
                )
    # The hook at 0% hits: an empty buffer that is looked up every minibatch.
    parts = prepare(args.out, args.nodes, 2)
    zero = args.out / "hook-zero-hits"
    run(
        TrainConfig(
            partitions=parts,
            out=zero,
            machines=2,
            epochs=args.epochs,
            policy="rudder",
            decider="never",
            buffer=0.25,
            cluster="netns",
        )
    )
    overhead = hook_overhead(zero)
    print(
        f"hook at 0% hits: {overhead['hook_ms']:.2f} ms per minibatch = "
        f"{overhead['hook_pct_of_step']:.2f}% of a {overhead['step_ms']:.1f} ms step (target < 5%)"
    )

    lines = [
        "| machines | link | policy | epoch s | vs none | rows/epoch | vs none | %-hits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = next(
            x
            for x in results
            if x["machines"] == r["machines"]
            and x["bandwidth"] == r["bandwidth"]
            and x["policy"] == "none"
        )
        lines.append(
            f"| {r['machines']} | {r['bandwidth']} | {r['policy']} | "
            f"{r['epoch_time_s']:.3f} | {r['epoch_time_s'] / ref['epoch_time_s']:.2f} | "
            f"{r['rows_fetched_per_epoch']:,.0f} | "
            f"{r['rows_fetched_per_epoch'] / ref['rows_fetched_per_epoch']:.2f} | "
            f"{100 * r['hit_rate']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    (args.out / "results.json").write_text(
        json.dumps({"runs": results, "hook_zero_hits": overhead}, indent=2) + "\n"
    )
    (args.out / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
