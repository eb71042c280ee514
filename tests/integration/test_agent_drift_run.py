"""The LLM agent steering a real DistDGL run on a drift workload: SmolLM2-135M behind the
embedded server, one agent sidecar per emulated machine, proximity-ordered minibatches."""

import json
import subprocess
import sys

import pytest

from tests.integration.training_support import make_parts, no_leftovers, rudder  # noqa: F401

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def ring_parts(tmp_path_factory):
    return make_parts(tmp_path_factory.mktemp("ring"), family="ring", method="random")


def test_the_llm_agent_decides_while_a_drift_workload_trains(ring_parts, tmp_path, no_leftovers):  # noqa: F811
    subprocess.run(
        [sys.executable, "-m", "rudder", "-q", "models", "fetch", MODEL], check=True, timeout=600
    )
    out = tmp_path / "run"
    rudder(
        "train",
        "--partitions",
        ring_parts,
        "--machines",
        2,
        "--epochs",
        2,
        "--batch-size",
        50,
        "--scenario",
        "locality",
        "--policy",
        "rudder",
        "--decider",
        "llm",
        "--llm-model",
        MODEL,
        "--llm-url",
        "http://127.0.0.1:11521",
        "--prompt",
        "decision-v3",
        "--agent-mode",
        "sync",
        "--out",
        out,
        timeout=900,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["scenario"] == "locality"
    agents = [a["agent"] for a in summary["agent"].values()]
    assert sum(a["decisions"] for a in agents) >= 5
    assert all(a["valid_pct"] == 100.0 for a in agents)
    # The decision came before the rest of the answer, and Pass@1 sits beside its baselines.
    assert all(a["latency_p50_s"] <= a["answer_p50_s"] for a in agents)
    assert all("baseline_skip_hits" in a for a in agents)
    server = summary["llm_server"]  # the model server's CPU use while the trainers ran
    assert server["cpu_s"] > 0 and 0 < server["cpu_share_pct"] <= 100
    assert server["threads"] >= 1 and 0 <= server["nice"] <= 19
