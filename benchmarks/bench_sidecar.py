"""The sidecar under load: decisions/s and latency for 1, 8 and 64 trainers, memory over time.

Starts a real sidecar (`rudder agent serve --decider heuristic --checkpoint ...`: a rule, with
the SQLite checkpoint training runs give it) on an ipc socket, and drives it with real ZeroMQ
DEALER sockets from this process, each a trainer with one request in flight that sends its next
metrics the moment its decision arrives: what async trainers do when minibatches come faster
than decisions (64 trainers at 1 kHz in the hardening probe). Measured:

(a) decisions/s over all trainers, and the round trip metrics -> decision (p50, p99), for
    1, 8 and 64 trainers, and the sidecar's own CPU time per decision (all its threads): what
    one core sustains, whatever this driver (sharing the machine) takes.
(b) a trainer's round trip while --flood new trainer ids say hello (fairness), and how many
    of its answers never came (2 s without one).
(c) the sidecar's RSS and checkpoint file after --decisions decisions (bounded memory).

    .venv/bin/python benchmarks/bench_sidecar.py [--seconds 5] [--decisions 100000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import zmq
from _sidecar import running_sidecar

from rudder.protocol import Bye, Hello, Metrics, MetricsReport, Ping, TrainerInfo, decode, encode

LOST_AFTER_S = 2.0  # a decision not back after this counts as lost


def metrics(t: int, trainer: int) -> Metrics:
    """Plausible metrics of minibatch ``t`` (drifting %-hits, so the rules have work to do)."""
    base = dict.fromkeys(Metrics.__dataclass_fields__, 0)
    hit = 40.0 + 10.0 * math.sin(t / 50.0)
    base.update(trainer=trainer, minibatch=t, total_minibatches=10**7, buffer_capacity=10**5)
    base.update(hit_pct=hit, hit_pct_window=hit - 1.0, hit_pct_cumulative=40.0, window=8)
    base.update(remote_inputs=1000, hits=int(10 * hit), misses=1000 - int(10 * hit))
    base.update(rows_fetched=1000 - int(10 * hit), rows_fetched_window=600.0)
    base.update(since_replacement=t % 7, replacements=t // 7, buffer_fill=10**5)
    base.update(round_rows_window=100, round_admit_hits=150, round_ghost_misses=100)
    return Metrics(**base)


class Trainers:
    """``n`` trainers on DEALER sockets, each with one request in flight (closed loop)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, ids: list[int]):
        self.poller = zmq.Poller()
        self.socks = {}
        self.seq = dict.fromkeys(ids, 0)
        self.sent_at: dict[int, float] = {}
        self.trips: list[float] = []
        self.inside: list[float] = []
        self.errors = 0
        self.decisions = 0
        for t in ids:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            s.send(encode(Hello(trainer=t, run_id="bench", info=TrainerInfo(graph="bench"))))
            self.socks[s] = t
            self.poller.register(s, zmq.POLLIN)
            self._send(s, t)

    def _send(self, sock: zmq.Socket, t: int) -> None:
        m = metrics(self.seq[t], t)
        sock.send(encode(MetricsReport(trainer=t, seq=self.seq[t], metrics=m)))
        self.sent_at[t] = time.perf_counter()

    def step(self, timeout_ms: int = 100, record: bool = True) -> None:
        """Take every reply that arrives within ``timeout_ms``; send the next metrics."""
        for sock, _ in self.poller.poll(timeout_ms):
            t = self.socks[sock]
            while True:
                try:
                    msg = decode(sock.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if msg.KIND == "decision" and msg.seq == self.seq[t]:
                    if record:
                        self.trips.append(time.perf_counter() - self.sent_at[t])
                        self.inside.append(msg.decision.latency_s)
                    self.decisions += 1
                    self.seq[t] += 1
                    self._send(sock, t)
                elif msg.KIND == "error":
                    self.errors += 1
        now = time.perf_counter()
        for sock, t in self.socks.items():  # lost: ask again, so the loop never stalls
            if now - self.sent_at[t] > LOST_AFTER_S:
                self.errors += 1
                self.seq[t] += 1
                self._send(sock, t)

    def close(self) -> None:
        for s in self.socks:
            s.close(0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def load(endpoint: str, pid: int, n: int, seconds: float, first_id: int) -> dict:
    proc = psutil.Process(pid)
    ctx = zmq.Context()
    tr = Trainers(ctx, endpoint, list(range(first_id, first_id + n)))
    try:
        warm = time.monotonic() + 0.5
        while time.monotonic() < warm:
            tr.step(record=False)
        tr.trips.clear()
        tr.inside.clear()
        done0, t0, cpu0 = tr.decisions, time.perf_counter(), cpu_s(proc)
        while time.perf_counter() - t0 < seconds:
            tr.step()
        rate = (tr.decisions - done0) / (time.perf_counter() - t0)
        cpu_per_decision = (cpu_s(proc) - cpu0) / max(tr.decisions - done0, 1)
    finally:
        tr.close()
        ctx.term()
    return {
        "case": f"{n} trainers",
        "decisions_per_s": rate,
        "sidecar_cpu_ms_per_decision": cpu_per_decision * 1e3,
        "decisions_per_sidecar_cpu_s": 1 / cpu_per_decision if cpu_per_decision else float("nan"),
        "trip_p50_ms": pct(tr.trips, 50) * 1e3,
        "trip_p99_ms": pct(tr.trips, 99) * 1e3,
        "inside_p99_ms": pct(tr.inside, 99) * 1e3,
        "lost": tr.errors,
    }


def flood(endpoint: str, ids: int, seconds: float, first_id: int) -> dict:
    """Trainer ``first_id`` in a closed loop while ``ids`` new trainer ids say hello."""
    ctx = zmq.Context()
    tr = Trainers(ctx, endpoint, [first_id])
    flooders = []
    for _ in range(8):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(endpoint)
        flooders.append(s)
    try:
        warm = time.monotonic() + 0.5
        while time.monotonic() < warm:
            tr.step(record=False)
        tr.trips.clear()
        hellos = [
            encode(Hello(trainer=first_id + 1 + i, run_id="flood", info=TrainerInfo()))
            for i in range(ids)
        ]
        t0 = time.perf_counter()
        sent = 0
        while time.perf_counter() - t0 < seconds:
            for s in flooders:  # replies to the flood (too_many_trainers) are dropped unread
                for payload in hellos[sent : sent + 25]:
                    s.send(payload)
                sent += 25
            tr.step(timeout_ms=1)
        for i in range(ids):  # the flood leaves (the next case needs room under the cap)
            flooders[i % len(flooders)].send(encode(Bye(trainer=first_id + 1 + i)))
        for s in flooders:  # a pong after the byes: all of them were read
            s.send(encode(Ping(seq=7)))
            while s.poll(10_000) and decode(s.recv()).KIND != "pong":
                pass
    finally:
        tr.close()
        for s in flooders:
            s.close(0)
        ctx.term()
    return {
        "case": f"1 trainer, {ids} new ids saying hello",
        "decisions_per_s": len(tr.trips) / seconds,
        "trip_p50_ms": pct(tr.trips, 50) * 1e3,
        "trip_p99_ms": pct(tr.trips, 99) * 1e3,
        "trip_max_ms": max(tr.trips) * 1e3 if tr.trips else float("nan"),
        "lost": tr.errors,
    }


def memory(endpoint: str, pid: int, ckpt: Path, decisions: int, n: int, first_id: int) -> dict:
    proc = psutil.Process(pid)
    ctx = zmq.Context()
    tr = Trainers(ctx, endpoint, list(range(first_id, first_id + n)))
    samples = []
    marks = [decisions * k // 4 for k in (1, 2, 3, 4)]
    t0 = time.perf_counter()
    try:
        for mark in marks:
            while tr.decisions < mark:
                tr.step(record=False)
            files = [ckpt, ckpt.with_name(ckpt.name + "-wal")]
            disk = sum(f.stat().st_size for f in files if f.exists())
            samples.append(
                {
                    "decisions": tr.decisions,
                    "rss_mb": proc.memory_info().rss / 2**20,
                    "disk_mb": disk / 2**20,
                }
            )
            print(f"  {samples[-1]}", flush=True)
    finally:
        tr.close()
        ctx.term()
    first, last = samples[0], samples[-1]
    per_1k = (last["rss_mb"] - first["rss_mb"]) / max(
        1, (last["decisions"] - first["decisions"]) / 1000
    )
    return {
        "case": f"memory, {n} trainers, {decisions} decisions",
        "seconds": time.perf_counter() - t0,
        "samples": samples,
        "rss_growth_mb_per_1k_decisions": per_1k,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="per load case")
    ap.add_argument("--trainers", default="1,8,64", help="load cases, comma-separated")
    ap.add_argument("--flood", type=int, default=5000, help="new ids in the fairness case")
    ap.add_argument("--decisions", type=int, default=100_000, help="for the memory case")
    ap.add_argument("--decider", default="heuristic")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rudder-bench-") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'agent.sock'}"
        ckpt = Path(tmp) / "agent.sqlite"
        with running_sidecar(endpoint, args.decider, ckpt, "bench") as proc:
            base = 0
            for n in (int(x) for x in args.trainers.split(",")):
                results.append(load(endpoint, proc.pid, n, args.seconds, base))
                print(results[-1], flush=True)
                base += n
            if args.flood:
                results.append(flood(endpoint, args.flood, args.seconds, 100_000))
                print(results[-1], flush=True)
            if args.decisions:
                results.append(memory(endpoint, proc.pid, ckpt, args.decisions, 8, 1000))
                print(results[-1], flush=True)
            alive = proc.poll() is None
    load_avg = os.getloadavg()[0]
    print(f"sidecar alive at the end: {alive}; load average {load_avg:.2f}")
    if args.json:
        out = {"decider": args.decider, "results": results, "load": load_avg, "alive": alive}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
