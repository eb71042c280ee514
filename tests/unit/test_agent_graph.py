"""The LangGraph agent, replaying metrics recorded from real training runs, with fake models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from rudder.controller.decision_models import LLMConfig, LLMModel, RuleModel, validate
from rudder.controller.effects import observe
from rudder.controller.graph import GraphAgent, build_agent, trainer_stats
from rudder.metrics_trace import read_metrics_trace
from rudder.protocol import Metrics
from rudder.rules import ROUND_PAYOFF, make_decider

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
GOOD = {
    "decision": "replace",
    "reason": "hits fell",
    "expected_hit_pct": "increase",
    "expected_communication": "decrease",
}


def records(name="distdgl-locality-heuristic-rank-0.jsonl"):
    return read_metrics_trace(FIXTURES / name)


class OllamaFake(FakeListChatModel):
    """Streams its answers as ChatOllama does: the last chunk carries Ollama's ``done: true``."""

    complete: bool = True

    def _stream(self, *args, **kwargs):
        yield from super()._stream(*args, **kwargs)
        if self.complete:
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=""), generation_info={"done": True}
            )


def llm_with(answers, complete=True):
    model = LLMModel(LLMConfig())
    model.chat = OllamaFake(responses=answers, complete=complete)  # the real client, faked
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
    # Decided on i, landed at i + 1, judged a window later: the last W + 1 still wait.
    window = trace[0].window
    assert window == 8 and s["evaluated"] == len(trace) - 1 - window
    assert s["awaiting_evaluation"] == window
    assert 0.0 <= s["pass_at_1_hits"] <= 1.0 and s["replacement_interval"] == 1.0


def test_pass_at_1_is_scored_over_the_window_after_landing():
    trace = [m.to_dict() for m in records()[:60]]
    agent = GraphAgent(lambda: llm_with([json.dumps(GOOD)] * 60))
    for m in trace:
        agent.decide(0, Metrics.from_dict(m))
    history = agent.state(0)["history"]
    assert len(history) == 32  # bounded
    for rec in history:
        # Decided on minibatch i, landed at j = i+1 (its window is "before"), judged on the
        # window ending at j + W ("after": minibatches j+1 .. j+W).
        j = rec["minibatch"] + 1
        assert rec["before"]["minibatch"] == j and rec["after"]["minibatch"] == j + 8
        b, a = trace[j], trace[j + 8]
        assert (rec["observed_hit_pct"], rec["observed_communication"]) == observe(
            b, a, tuple(rec["bands"])
        )
        assert rec["pass_hit"] == (rec["observed_hit_pct"] == "increase")
    s = agent.stats()[0]
    # A model that always says replace/increase scores exactly the always-replace predictor.
    assert s["pass_at_1_hits"] == s["baseline_replace_hits"]
    assert s["pass_at_1_comm"] == s["baseline_replace_comm"]
    assert s["baseline_heuristic_hits"] is not None


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

        def answer(self, current, history, on_decision=None):
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
    a, b = records(), records("distdgl-locality-heuristic-rank-1.jsonl")
    for m in a[:5]:
        agent.decide(0, m)
    for m in b[:3]:
        agent.decide(1, m)
    assert agent.stats()[0]["decisions"] == 5 and agent.stats()[1]["decisions"] == 3


def test_the_llm_sees_the_decision_prompt_with_its_history():
    seen = []

    class Recording(OllamaFake):
        def stream(self, messages, *args, **kwargs):
            seen.append(messages)
            return super().stream(messages, *args, **kwargs)

    model = LLMModel(LLMConfig())
    model.chat = Recording(responses=[json.dumps(GOOD)] * 12)
    agent = GraphAgent(lambda: model)
    for m in records()[:12]:  # the first decision is judged at minibatch 9
        agent.decide(0, m)
    system, user = seen[-1]
    assert system[0] == "system" and "feature cache" in system[1]
    assert "Minibatch 11 of 180" in user[1] and "(you expected increase)" in user[1]
    assert all(s[0] == seen[0][0] for s in seen)  # the system prefix never changes


def test_a_stream_that_never_said_done_is_an_invalid_answer():
    agent = GraphAgent(lambda: llm_with([json.dumps(GOOD)], complete=False))
    d = agent.decide(0, records()[20])
    assert not d.valid and "without done: true" in d.reason
    agent = GraphAgent(lambda: llm_with([json.dumps(GOOD)]))
    assert agent.decide(0, records()[20]).valid


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


def test_a_decision_first_answer_is_acted_on_before_its_predictions_stream_in():
    answer = json.dumps(
        {
            "decision": "replace",
            "expected_hit_pct": "increase",
            "expected_communication": "decrease",
            "reason": "net +900",
        }
    )
    streamed: list[str] = []

    class Streaming(OllamaFake):
        def stream(self, messages, *args, **kwargs):
            for chunk in super().stream(messages, *args, **kwargs):
                streamed.append(chunk.content)
                yield chunk

    model = LLMModel(LLMConfig(prompt="decision-v3"))
    assert next(iter(model.prompt.schema["properties"])) == "decision"
    model.chat = Streaming(responses=[answer])
    heard = []
    agent = GraphAgent(lambda: model)
    d = agent.decide(0, records()[20], early=lambda x: heard.append((x, "".join(streamed))))
    assert [h[0] for h in heard] == ["replace"]
    so_far = heard[0][1]
    assert "expected_hit_pct" not in so_far and len(so_far) < len(answer) / 3
    assert d.decision == "replace" and d.valid and d.expected_hit_pct == "increase"
    state = agent.state(0)
    assert state["latency_s"] <= state["answer_s"]


def test_the_grounding_reaches_the_prompt_exactly():
    m = next(r for r in records() if r.round_swap_rows and r.round_evict_use).to_dict()
    model = LLMModel(LLMConfig(prompt="decision-v3"))
    user = model.messages(m, [])[1]["content"]
    net = m["round_swap_rows"] * (m["round_admit_use"] - m["round_evict_use"])
    for text in (
        f"swap {m['round_swap_rows']} rows",
        f"admitted rows missed {m['round_admit_use']:.1f} times each",
        f"evicted rows hit {m['round_evict_use']:.1f} times each",
        f"net {net:+.0f} hits per W",
        f"Repeat misses {m['repeat_miss_pct']:.0f}%",
        f"%-hits {m['hit_pct_window']:.0f} (last W), {m['hit_pct_prev_window']:.0f} (W before)",
        f"W = {m['window']}",
    ):
        assert text in user, text


def test_the_round_outcomes_reach_the_default_prompt_exactly():
    rows = records()
    m = next(r for r in rows if r.round_rows_window and r.round_ghost_misses).to_dict()
    user = LLMModel(LLMConfig()).messages(m, [])[1]["content"]
    payoff = m["round_admit_hits"] / m["round_ghost_misses"]
    verdict = (
        f"at least {ROUND_PAYOFF:g}: rounds pay"
        if payoff >= ROUND_PAYOFF
        else f"below {ROUND_PAYOFF:g}: rounds churn"
    )
    assert (
        f"Rounds in the last W: {m['round_rows_window']} rows put in, hit "
        f"{m['round_admit_hits']} times since; the rows they took out were missed "
        f"{m['round_ghost_misses']} times since: payoff {payoff:.1f}, {verdict}."
    ) in user
    assert f"Last round: {m['since_replacement']} minibatches ago." in user
    # Steady access: the heuristic rarely replaced; a window without rounds says so, and
    # whether it is time to try one (2W after the last).
    quiet = [
        r
        for r in records("distdgl-stationary-heuristic-rank-0.jsonl")[1:]
        if not r.round_rows_window
    ]
    assert len(quiet) > 20
    for r in quiet:
        user = LLMModel(LLMConfig()).messages(r.to_dict(), [])[1]["content"]
        assert "Rounds in the last W: none." in user and "payoff" not in user
        advice = "at least 2W: try one" if r.since_replacement >= 2 * r.window else "under 2W: wait"
        assert f"Last round: {r.since_replacement} minibatches ago, {advice}." in user


TIMES = ("latency_s", "answer_s", "latencies", "answer_latencies")


def untimed(values: dict) -> dict:
    out = {k: v for k, v in values.items() if k not in TIMES}
    if "result" in out:
        out["result"] = {k: v for k, v in out["result"].items() if k != "latency_s"}
    return out


@pytest.mark.parametrize(
    "factory",
    [lambda: RuleModel(make_decider("heuristic")), lambda: llm_with([json.dumps(GOOD)] * 80)],
    ids=["heuristic", "llm"],
)
def test_the_direct_engine_gives_what_the_graph_gives(factory):
    graph, direct = GraphAgent(factory), GraphAgent(factory, engine="direct")
    for m in records()[:80]:
        a, b = graph.decide(0, m), direct.decide(0, m)
        assert a.decision == b.decision and a.reason == b.reason and a.valid == b.valid
    assert untimed(graph.state(0)) == untimed(direct.state(0))
    assert graph.stats()[0]["pass_at_1_hits"] == direct.stats()[0]["pass_at_1_hits"]
    with pytest.raises(ValueError, match="unknown agent engine 'fast'"):
        GraphAgent(factory, engine="fast")
