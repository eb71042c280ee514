"""The agent link's own costs: what a trainer pays per minibatch, and a sidecar round trip.

Starts a real sidecar (`rudder agent serve --decider never --checkpoint ...`: the agent's
steps with its SQLite checkpoint and a rule that answers in microseconds, so what is measured
is everything but an LLM; benchmarks/bench_sidecar.py loads it with many trainers) on an ipc
socket and measures

(a) the trainer-side cost of `decision_for(t)` + `offer(metrics)` in async mode, back to back
    (most offers dropped: a request is in flight) and with 1 ms minibatches (every minibatch
    receives a decision and sends a request: the full path). Target: < 100 us.
(b) the round trip through the sidecar, metrics out to decision in, with a sync client and
    with a bare DEALER socket, plus the server-internal part (receipt to decision ready, as
    the decision's latency_s reports it). Target: < 5 ms.

    .venv/bin/python benchmarks/bench_agent.py [--minibatches 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import zmq
from _sidecar import running_sidecar

from rudder.cli.common import format_table
from rudder.protocol import Hello, Metrics, MetricsReport, TrainerInfo, decode, encode
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig


def metrics(t: int, trainer: int) -> Metrics:
    base = dict.fromkeys(Metrics.__dataclass_fields__, 0)
    base.update(trainer=trainer, minibatch=t, total_minibatches=10**6, buffer_capacity=10**5)
    base.update(hit_pct=42.5, hit_pct_window=41.0, hit_pct_cumulative=40.0, since_replacement=3)
    return Metrics(**base)


def summary(name: str, samples_s: list[float], unit: float, target: float | None) -> dict:
    qs = statistics.quantiles(samples_s, n=100)
    return {
        "measure": name,
        "n": len(samples_s),
        "mean": statistics.fmean(samples_s) / unit,
        "p50": qs[49] / unit,
        "p95": qs[94] / unit,
        "p99": qs[98] / unit,
        "max": max(samples_s) / unit,
        "target": target,
    }


def client_cost(endpoint: str, n: int, gap_s: float, trainer: int) -> tuple[list[float], dict]:
    c = AgentClient(ClientConfig(endpoint=endpoint, trainer=trainer))
    c.hello(TrainerInfo(graph="bench"))
    records = [metrics(t, trainer) for t in range(n)]
    costs = []
    try:
        for t in range(n):
            t0 = time.perf_counter()
            c.decision_for(t)
            c.offer(records[t])
            costs.append(time.perf_counter() - t0)
            if gap_s:
                until = time.perf_counter() + gap_s
                while time.perf_counter() < until:  # busy: a minibatch computes, it does not sleep
                    pass
        return costs, c.counters()
    finally:
        c.close()


def sync_round_trips(endpoint: str, n: int, trainer: int) -> tuple[list[float], list[float]]:
    c = AgentClient(ClientConfig(endpoint=endpoint, trainer=trainer, mode="sync", sync_timeout_s=5))
    c.hello(TrainerInfo(graph="bench"))
    trips, inside = [], []
    try:
        for t in range(n):
            t0 = time.perf_counter()
            c.offer(metrics(t, trainer))
            c.decision_for(t + 1)  # waits for the answer to minibatch t
            trips.append(time.perf_counter() - t0)
            if c.last_decision is not None and c.last_decision.minibatch == t:
                inside.append(c.last_decision.latency_s)
        return trips, inside
    finally:
        c.close()


def raw_round_trips(endpoint: str, n: int, trainer: int) -> list[float]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(encode(Hello(trainer=trainer, info=TrainerInfo(graph="bench"))))
    payloads = [
        encode(MetricsReport(trainer=trainer, seq=t, metrics=metrics(t, trainer))) for t in range(n)
    ]
    trips = []
    try:
        for t in range(n):
            t0 = time.perf_counter()
            sock.send(payloads[t])
            while True:  # skip pongs or anything else; wait for our decision
                reply = decode(sock.recv())
                if getattr(reply, "seq", None) == t and reply.KIND == "decision":
                    break
            trips.append(time.perf_counter() - t0)
        return trips
    finally:
        sock.close(0)
        ctx.term()


def measure(endpoint: str, args: argparse.Namespace, trainer: int) -> tuple[list[dict], dict]:
    b2b, b2b_counts = client_cost(endpoint, args.minibatches, 0.0, trainer=trainer)
    full, full_counts = client_cost(endpoint, args.round_trips, 1e-3, trainer=trainer + 1)
    trips, inside = sync_round_trips(endpoint, args.round_trips, trainer=trainer + 2)
    raw = raw_round_trips(endpoint, args.round_trips, trainer=trainer + 3)
    rows = [
        summary("(a) client cost, back to back [us]", b2b, 1e-6, 100.0),
        summary("(a) client cost, 1 ms minibatches [us]", full, 1e-6, 100.0),
        summary("(b) round trip, sync client [ms]", trips, 1e-3, 5.0),
        summary("(b) round trip, bare socket [ms]", raw, 1e-3, 5.0),
        summary("(b) inside the server [ms]", inside, 1e-3, None),
    ]
    return rows, {"back_to_back": b2b_counts, "one_ms": full_counts}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minibatches", type=int, default=20000, help="for the back-to-back run")
    ap.add_argument("--round-trips", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3, help="runs; each measure keeps its best")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="rudder-bench-") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'agent.sock'}"
        # The production path: the agent with its SQLite checkpoint, as in training runs.
        with running_sidecar(endpoint, "never", Path(tmp) / "agent.sqlite", "b"):
            for r in range(args.repeat):
                runs.append(measure(endpoint, args, trainer=10 * r))

    # Best of the repeats per measure (like timeit): on a shared 2-core machine the noise of
    # other processes only ever adds time.
    rows = [
        min((run[0][i] for run in runs), key=lambda r: r["mean"]) for i in range(len(runs[0][0]))
    ]
    counts = runs[-1][1]
    load = os.getloadavg()[0]
    print(
        f"agent link on ipc, decider `never`, best of {args.repeat} (load average {load:.2f}); "
        f"back to back: {counts['back_to_back']['requests']} requests, "
        f"{counts['back_to_back']['dropped']} dropped (in flight); 1 ms minibatches: "
        f"{counts['one_ms']['decisions']} decisions for {args.round_trips} minibatches "
        f"(interval {counts['one_ms']['replacement_interval']:.2f})"
    )
    cols = ["measure", "n", "mean", "p50", "p95", "p99", "max", "target"]
    print(format_table(cols, [[r[c] for c in cols] for r in rows]))
    if args.json:
        out = {"rows": rows, "runs": [run[0] for run in runs], "counts": counts, "load": load}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
