"""The local LLM as the agent uses it: seconds per decision, tokens/s, memory, server overhead.

Decision prompts are the agent's real ones (the default, ``prompts/decision-v3``, with its
answer schema) filled from the metrics of a replay of the golden trace. Each model answers the
same N prompts twice: through ``rudder llm serve`` with the official ``ollama`` client (JSON-
schema output, temperature 0), and by calling llama.cpp directly in-process with the same
request; the two never run at the same time. Run-to-run noise on a shared 2-core machine is
~10%, so the overhead is also measured per request: wall time minus llama.cpp's own prompt +
generation time ("outside llama.cpp"), through the server and directly; their difference is what
the server adds.

    .venv/bin/python benchmarks/bench_llm.py [--models smollm2-135m,qwen2.5-coder-1.5b] [-n 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from rudder.llm import models
from rudder.llm.embedded import answers
from rudder.llm.engine import Engine
from rudder.prompts import decision_messages, load, metrics_history
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.trace import load_trace

OPTIONS = {"temperature": 0, "seed": 7, "num_predict": 100, "num_ctx": 2048}
SCHEMA = load().schema
GOLDEN = Path(__file__).parents[1] / "tests" / "fixtures" / "golden" / "trace-rank-0.npz"


def decision_prompts(n: int) -> list[list[dict]]:
    """``n`` chat requests built from consecutive minibatches of a replayed trace."""
    prompt = load()
    metrics = []
    replay(
        load_trace(GOLDEN), "rudder", ReplayConfig(buffer_fraction=0.25), on_metrics=metrics.append
    )
    records = [m.to_dict() for m in metrics]
    step = max(1, len(records) // (n + 1))
    return [
        decision_messages(
            prompt, records[i * step], metrics_history(records[max(0, i * step - 4) : i * step])
        )
        for i in range(1, n + 1)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def via_server(name: str, prompts: list[list[dict]], threads: int) -> dict:
    import ollama

    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rudder",
            "-q",
            "llm",
            "serve",
            "--model",
            name,
            "--port",
            url.rsplit(":", 1)[1],
            "--threads",
            str(threads),
        ]
    )
    try:
        while not answers(url, timeout_s=0.5):
            if proc.poll() is not None:
                raise RuntimeError("server died")
            time.sleep(0.2)
        client = ollama.Client(host=url, timeout=600)
        lat, outside, valid, gen_tps, prompt_tps = [], [], 0, [], []
        for i, msgs in enumerate([prompts[0], *prompts]):  # the first is a warm-up
            t0 = time.perf_counter()
            r = client.chat(model=name, messages=msgs, format=SCHEMA, options=OPTIONS)
            dt = time.perf_counter() - t0
            if i == 0:
                continue
            lat.append(dt)
            outside.append(dt - (r.prompt_eval_duration + r.eval_duration) / 1e9)
            with contextlib.suppress(ValueError, KeyError):
                valid += json.loads(r.message.content)["decision"] in ("replace", "skip")
            if r.eval_duration:
                gen_tps.append(r.eval_count / (r.eval_duration / 1e9))
            if r.prompt_eval_duration:
                prompt_tps.append(r.prompt_eval_count / (r.prompt_eval_duration / 1e9))
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "latencies_s": lat,
        "outside_s": outside,
        "valid": valid,
        "gen_tok_s": statistics.median(gen_tps),
        "prompt_tok_s": statistics.median(prompt_tps) if prompt_tps else None,
        "server_rss_bytes": rss,
    }


def direct(path: Path, prompts: list[list[dict]], threads: int) -> tuple[list, list]:
    engine = Engine(path, threads=threads, ctx=OPTIONS["num_ctx"])
    lat, outside = [], []
    for i, msgs in enumerate([prompts[0], *prompts]):
        t0 = time.perf_counter()
        r = engine.chat(msgs, options=OPTIONS, fmt=SCHEMA)
        dt = time.perf_counter() - t0
        if i:
            lat.append(dt)
            outside.append(dt - (r.prompt_eval_duration + r.eval_duration) / 1e9)
    engine.close()
    return lat, outside


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default=f"{models.TEST_MODEL},{models.DEFAULT_MODEL}")
    ap.add_argument("-n", type=int, default=10, help="decisions per model and path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    prompts = decision_prompts(args.n)
    rows = []
    for name in args.models.split(","):
        try:
            _, path = models.resolve(name)
        except ValueError as e:
            print(f"{name}: skipped ({e})")
            continue
        s = via_server(name, prompts, args.threads)
        d, d_outside = direct(path, prompts, args.threads)
        srv, dir_ = statistics.median(s["latencies_s"]), statistics.median(d)
        added = statistics.median(s["outside_s"]) - statistics.median(d_outside)
        row = {
            "model": name,
            "p50_s": srv,
            "p95_s": pct(s["latencies_s"], 0.95),
            "direct_p50_s": dir_,
            "overhead_pct": 100 * (srv - dir_) / dir_,
            "server_added_ms": 1e3 * added,
            "server_added_pct": 100 * added / dir_,
            "valid": f"{s['valid']}/{len(s['latencies_s'])}",
            "gen_tok_s": s["gen_tok_s"],
            "prompt_tok_s": s["prompt_tok_s"],
            "rss_gb": s["server_rss_bytes"] / 2**30,
        }
        rows.append(row)
        print(
            f"{name:20s} p50 {row['p50_s']:.2f} s  p95 {row['p95_s']:.2f} s  direct p50 "
            f"{dir_:.2f} s  (run to run {row['overhead_pct']:+.1f}%; the server adds "
            f"{row['server_added_ms']:.1f} ms = {row['server_added_pct']:.2f}%)  "
            f"valid {row['valid']}  "
            f"gen {row['gen_tok_s']:.0f} tok/s  prompt {row['prompt_tok_s'] or 0:.0f} tok/s  "
            f"RSS {row['rss_gb']:.2f} GB",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
