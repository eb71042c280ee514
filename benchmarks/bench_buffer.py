"""Per-minibatch cost and memory of the persistent buffer (the trainer's hot path).

Measures, on one core, the throughput of the scored (Rudder) policy's lookup + scoring
(target: >= 5 million remote ids/s), the cost of a replacement round, the row gather/scatter
an adapter does, and the buffer's memory relative to the rows it holds (target: <= 1.1x).

    .venv/bin/python benchmarks/bench_buffer.py [--remote-nodes 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from rudder.trainer_hooks.buffer import PersistentBuffer
from rudder.trainer_hooks.policies import make_policy


def zipf_batches(rng, n_batches, universe, per_batch, skew=0.8):
    """Minibatches of unique remote ids with a skewed popularity, like sampled inputs."""
    p = 1.0 / np.arange(1, universe + 1) ** skew
    p /= p.sum()
    ids = rng.permutation(universe).astype(np.int64) * 7 + 3  # sparse, unordered global ids
    out = []
    for _ in range(n_batches):
        draw = np.unique(rng.choice(universe, size=int(per_batch * 1.4), p=p))[:per_batch]
        out.append(np.sort(ids[draw]))
    return out


def best_rate(fn, batches, repeats):
    """Best-of-`repeats` remote ids per second of `fn` over all batches."""
    total = sum(b.shape[0] for b in batches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return total / best, best / len(batches)


def fresh_policy(capacity, feat_dim, batches):
    # The production `rudder` policy with its defaults (frequency-aware admission included).
    p = make_policy("rudder", capacity, feat_dim=feat_dim)
    for b in batches[:5]:  # warm up: fill the buffer, compile the kernels
        p.step(b, replace=True)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--remote-nodes", type=int, default=1_000_000)
    ap.add_argument("--per-batch", type=int, default=50_000, help="remote ids per minibatch")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--buffer", type=float, default=0.25)
    ap.add_argument("--feat-dim", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    rng = np.random.default_rng(0)
    batches = zipf_batches(rng, args.batches, args.remote_nodes, args.per_batch)
    capacity = int(args.buffer * args.remote_nodes)
    res = {
        "machine": platform.processor() or platform.machine(),
        "cores_used": 1,
        "remote_nodes": args.remote_nodes,
        "ids_per_minibatch": args.per_batch,
        "capacity_rows": capacity,
        "feat_dim": args.feat_dim,
    }

    p = fresh_policy(capacity, 0, batches)
    res["lookup_ids_per_s"], _ = best_rate(
        lambda: [p.buffer.lookup(b) for b in batches], batches, args.repeats
    )

    def steps(replace):
        pol = fresh_policy(capacity, 0, batches)
        return lambda: [pol.step(b, replace=replace) for b in batches]

    # Fresh policy per repeat so every repeat sees the same state.
    rate, per_mb = [], []
    for replace in (False, True):
        best = (0.0, 0.0)
        for _ in range(args.repeats):
            r, t = best_rate(steps(replace), batches, 1)
            best = max(best, (r, -t))
        rate.append(best[0])
        per_mb.append(-best[1])
    res["lookup_scoring_ids_per_s"] = rate[0]
    res["lookup_scoring_ms_per_minibatch"] = per_mb[0] * 1e3
    res["with_replacement_round_ids_per_s"] = rate[1]
    res["with_replacement_round_ms_per_minibatch"] = per_mb[1] * 1e3

    # The adapter's row traffic: gather the hits, scatter the admitted rows.
    pol = fresh_policy(capacity, args.feat_dim, batches)
    plans = [pol.step(b, replace=True) for b in batches[5:25]]
    rows = {id(pl): np.ones((pl.n_fetched, args.feat_dim), dtype=np.float32) for pl in plans}
    t0 = time.perf_counter()
    for pl in plans:
        pol.buffer.read(pl.slots[pl.hits])
        pol.commit(pl, rows[id(pl)])
    res["row_gather_scatter_ms_per_minibatch"] = (time.perf_counter() - t0) / len(plans) * 1e3
    res["mean_hits_per_minibatch"] = float(np.mean([pl.n_hits for pl in plans]))
    res["mean_admitted_per_minibatch"] = float(np.mean([pl.n_admitted for pl in plans]))

    mem = {}
    for dim in (64, 100, 128, 256, 602):
        b = PersistentBuffer(capacity, dim)
        mem[dim] = b.memory_bytes() / b.row_bytes()
    res["memory_over_rows_by_feat_dim"] = mem
    res["miss_tracker_bytes_per_distinct_id"] = pol.candidates.memory_bytes() / max(
        1, len(pol.candidates)
    )

    r = res
    print(
        f"buffer {capacity:,} rows of {args.remote_nodes:,} remote nodes; "
        f"{args.per_batch:,} remote ids per minibatch; 1 core"
    )
    lines = [
        ("lookup only", f"{r['lookup_ids_per_s'] / 1e6:.1f} M ids/s"),
        (
            "lookup + scoring",
            f"{r['lookup_scoring_ids_per_s'] / 1e6:.1f} M ids/s "
            f"({r['lookup_scoring_ms_per_minibatch']:.2f} ms/minibatch)   target >= 5",
        ),
        (
            "... with a replacement round",
            f"{r['with_replacement_round_ids_per_s'] / 1e6:.1f} "
            f"M ids/s ({r['with_replacement_round_ms_per_minibatch']:.2f} ms/minibatch)",
        ),
        (
            "row gather + scatter",
            f"{r['row_gather_scatter_ms_per_minibatch']:.2f} ms/minibatch "
            f"(feat_dim {args.feat_dim}, {r['mean_hits_per_minibatch']:,.0f} hits, "
            f"{r['mean_admitted_per_minibatch']:,.0f} rows admitted)",
        ),
        (
            "memory / rows held",
            "  ".join(f"F={d}: {x:.3f}x" for d, x in mem.items()) + "   target <= 1.1",
        ),
        ("miss tracker", f"{r['miss_tracker_bytes_per_distinct_id']:.1f} B per distinct missed id"),
    ]
    for label, value in lines:
        print(f"  {label:30s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
