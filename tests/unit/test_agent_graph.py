"""The LangGraph agent, replaying metrics recorded from real training runs, with fake models."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from rudder.controller.decision_models import LLMConfig, LLMModel, RuleModel, validate
from rudder.controller.effects import observe
from rudder.controller.graph import GraphAgent, build_agent, trainer_stats
from rudder.metrics_trace import read_metrics_trace
from rudder.protocol import Metrics
from rudder.rules import make_decider

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
GOOD = {
    "decision": "replace",
    "reason": "hits fell",
    "expected_hit_pct": "increase",
    "expected_communication": "decrease",
}


def records(name="distdgl-2m-heuristic-rank-0.jsonl"):
    return read_metrics_trace(FIXTURES / name)


def llm_with(answers):
    model = LLMModel(LLMConfig())
    model.chat = FakeListChatModel(responses=answers)  # the real chat client, swapped for a fake
    return model


def test_replaying_a_real_trace_with_a_rule_decider():
    agent = GraphAgent(lambda: RuleModel(make_decider("every:3")))
    trace = records()
    decisions = [agent.decide(0, m) for m in trace]
    assert [d.minibatch for d in decisions] == [m.minibatch for m in trace]
    assert all(d.valid for d in decisions)
    assert {d.decision for d in decisions} == {"replace", "skip"}
    s = agent.stats()[0]
    assert s["decisions"] == len(trace) and s["valid_pct"] == 100.0
    assert s["evaluated"] == len(trace) - 2  # the last two are still in the pipeline
    assert 0.0 <= s["pass_at_1_hits"] <= 1.0 and s["replacement_interval"] == 1.0


def test_pass_at_1_is_scored_against_what_happened_next():
    trace = [m.to_dict() for m in records()[:40]]
    agent = GraphAgent(lambda: llm_with([json.dumps(GOOD)] * 40))
    for m in trace:
        agent.decide(0, Metrics.from_dict(m))
    history = agent.state(0)["history"]
    assert len(history) == 32  # bounded
    for rec in history:
        # Decided on minibatch i, landed at i+1 ("before"), judged on i+2 ("after").
        assert rec["before"]["minibatch"] == rec["minibatch"] + 1
        assert rec["after"]["minibatch"] == rec["minibatch"] + 2
        b = trace[rec["before"]["minibatch"]]
        a = trace[rec["after"]["minibatch"]]
        assert (rec["observed_hit_pct"], rec["observed_communication"]) == observe(b, a)
        assert rec["pass_hit"] == (rec["observed_hit_pct"] == "increase")
    c = agent.state(0)["counts"]
    assert c["pass_hit"] == sum(
        1 for m0, m1 in itertools.pairwise(trace[1:40]) if observe(m0, m1)[0] == "increase"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "yes, replace the nodes",  # prose (the authors' substring bug)
        '{"decision": "replace", "reason": "x"',  # truncated JSON
        '{"decision": "maybe", "reason": "x", "expected_hit_pct": "increase", '
        '"expected_communication": "decrease"}',  # outside the schema
        '{"decision": "replace"}',  # missing fields
        "[1, 2, 3]",
    ],
)
def test_garbage_answers_are_counted_invalid_and_mean_skip(raw):
    agent = GraphAgent(lambda: llm_with([raw]))
    d = agent.decide(0, records()[5])
    assert (d.decision, d.valid) == ("skip", False)
    assert "invalid answer" in d.reason
    assert agent.stats()[0]["invalid"] == 1


def test_a_failing_model_means_skip_and_the_agent_keeps_deciding():
    class Flaky:
        name = "flaky"
        calls = 0

        def answer(self, current, history):
            Flaky.calls += 1
            if Flaky.calls % 2:
                raise TimeoutError("LLM did not answer in 120 s")
            return dict(GOOD)

    agent = GraphAgent(Flaky)
    out = [agent.decide(0, m) for m in records()[:6]]
    assert [d.valid for d in out] == [False, True] * 3
    assert "TimeoutError" in out[0].reason


def test_history_resumes_from_the_checkpoint(tmp_path):
    ckpt = tmp_path / "agent.sqlite"
    trace = records()
    first = GraphAgent(lambda: RuleModel(make_decider("always")), run_id="r1", checkpoint=ckpt)
    for m in trace[:10]:
        first.decide(3, m)
    before = first.stats()[3]
    first.close()
    second = GraphAgent(lambda: RuleModel(make_decider("always")), run_id="r1", checkpoint=ckpt)
    second.decide(3, trace[10])  # a restarted sidecar: trainer 3's history is still there
    after = trainer_stats(second.state(3))
    assert after["decisions"] == before["decisions"] + 1
    assert after["evaluated"] == before["evaluated"] + 1
    second.close()


def test_trainers_have_separate_threads():
    agent = GraphAgent(lambda: RuleModel(make_decider("every:2")))
    a, b = records(), records("distdgl-4m-1gbit-rank-2.jsonl")
    for m in a[:5]:
        agent.decide(0, m)
    for m in b[:3]:
        agent.decide(1, m)
    assert agent.stats()[0]["decisions"] == 5 and agent.stats()[1]["decisions"] == 3


def test_the_llm_sees_the_decision_prompt_with_its_history():
    seen = []

    class Recording(FakeListChatModel):
        def invoke(self, messages, *args, **kwargs):
            seen.append(messages)
            return super().invoke(messages, *args, **kwargs)

    model = LLMModel(LLMConfig())
    model.chat = Recording(responses=[json.dumps(GOOD)] * 5)
    agent = GraphAgent(lambda: model)
    for m in records()[:5]:
        agent.decide(0, m)
    system, user = seen[-1]
    assert system[0] == "system" and "persistent buffer" in system[1]
    assert "Minibatch 4 of 200" in user[1] and "you expected %-hits increase" in user[1]
    assert all(s[0] == seen[0][0] for s in seen)  # the system prefix never changes


def test_validate_and_config_errors():
    assert validate(json.dumps(GOOD))[0]["decision"] == "replace"
    assert validate({**GOOD, "reason": "x" * 999})[0]["reason"] == "x" * 200
    with pytest.raises(ValueError, match="num_ctx"):
        LLMConfig(num_ctx=8192)
    with pytest.raises(ValueError, match="unknown decider"):
        build_agent("sometimes")


def test_the_controller_never_loads_torch_dgl_or_numba():
    code = (
        "import sys, rudder.controller.graph, rudder.controller.decision_models\n"
        "print(sorted(m for m in ('torch', 'dgl', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
