"""The whole decision path with a real model: a trainer's client, the agent sidecar over
ZeroMQ, the LangGraph agent, ChatOllama, the embedded Ollama-API server, SmolLM2-135M."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rudder.launcher.sidecars import AgentSidecars
from rudder.llm.embedded import llm_available
from rudder.metrics_trace import read_metrics_trace
from rudder.protocol import StatsRequest, TrainerInfo
from rudder.trainer_hooks.agent_client import AgentClient, ClientConfig, ask

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
TRACE = (
    Path(__file__).parents[1] / "fixtures" / "metrics" / "distdgl-locality-heuristic-rank-0.jsonl"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_agent_decides_for_a_trainer_through_the_sidecar(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "rudder", "-q", "models", "fetch", MODEL], check=True, timeout=600
    )
    records = read_metrics_trace(TRACE)[:12]  # a decision is judged a window (8) after landing
    url = f"http://127.0.0.1:{free_port()}"
    ep = f"ipc://{tmp_path}/agent.sock"
    options = {
        "llm_url": url,
        "llm_model": MODEL,
        "run_id": "t",
        "checkpoint": str(tmp_path / "agent.sqlite"),
        "prompt": "decision-v3",  # decision first: the trainer hears it before the rest
    }
    with llm_available(url, MODEL), AgentSidecars([ep], "llm", options, tmp_path / "logs"):
        client = AgentClient(ClientConfig(endpoint=ep, trainer=0, mode="sync", sync_timeout_s=120))
        try:
            assert client.hello(TrainerInfo(total_minibatches=200, buffer_capacity=12243))
            for m in records:
                client.decision_for(m.minibatch)  # sync: waits for the answer to the last request
                client.offer(m)
            client.decision_for(len(records))
            # The trainer has the last decision; the agent may still be finishing its answer.
            deadline = time.monotonic() + 120
            while True:
                stats = ask(ep, StatsRequest(seq=1), timeout_s=10).trainers[0]["agent"]
                if stats["decisions"] == len(records) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            client.close()
    assert client.timeouts == 0
    assert [t for t, _ in client.applied] == list(range(1, len(records) + 1))
    assert stats["decisions"] == len(records)
    assert stats["valid_pct"] == 100.0  # the JSON-schema grammar keeps even a 135M model valid
    assert stats["evaluated"] == len(records) - 1 - records[0].window
    assert stats["latency_p50_s"] < stats["answer_p50_s"]  # the decision came before the rest
    logged = [
        json.loads(x)
        for x in (tmp_path / "logs" / "agent-0.decisions.jsonl").read_text().splitlines()
    ]
    sent = [d for d in logged if not d.get("final_answer")]
    final = [d for d in logged if d.get("final_answer")]
    assert [d["minibatch"] for d in sent] == [m.minibatch for m in records]
    assert all(d["valid"] and d["decision"] in ("replace", "skip") for d in sent)
    # Each early reply is followed by the finished answer, with the same decision.
    assert [(d["minibatch"], d["decision"]) for d in final] == [
        (d["minibatch"], d["decision"]) for d in sent
    ]
    assert all(d["expected_hit_pct"] in ("increase", "decrease", "stagnant") for d in final)
