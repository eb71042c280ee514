from pathlib import Path

import pytest

from rudder.prompts import (
    DECISION_SCHEMA,
    DEFAULT_PROMPT,
    available,
    decision_messages,
    load,
    metrics_history,
)
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.trace import load_trace

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "trace-rank-0.npz"


@pytest.fixture(scope="module")
def records():
    metrics = []
    replay(
        load_trace(GOLDEN), "rudder", ReplayConfig(buffer_fraction=0.25), on_metrics=metrics.append
    )
    return [m.to_dict() for m in metrics]


def test_the_default_prompt_ships(records):
    assert DEFAULT_PROMPT in available()
    p = load()
    assert "replace" in p.system and "skip" in p.system
    msgs = decision_messages(p, records[10], metrics_history(records[6:10]))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == p.system  # a static prefix: identical on every decision
    user = msgs[1]["content"]
    assert "Minibatch 10 of" in user and "minibatch 9:" in user and "minibatch 8:" in user
    assert "minibatch 6:" not in user  # the default shows the two latest only (tokens cost)
    assert "{" not in user  # every field was filled
    assert next(iter(p.schema["properties"])) == "decision"  # decided first, acted on early


def test_a_prompt_schema_must_name_the_decision_fields(tmp_path):
    (tmp_path / "system.md").write_text("s")
    (tmp_path / "user.md").write_text("u")
    (tmp_path / "schema.json").write_text('{"properties": {"decision": {}}, "required": []}')
    with pytest.raises(ValueError, match="exactly the properties"):
        load(str(tmp_path))


@pytest.mark.parametrize("name", available())
def test_every_shipped_prompt_fills_and_names_the_answer(name, records):
    assert {"decision-v1", "decision-v2"} <= set(available())
    p = load(name)
    for word in ("replace", "skip", "increase", "decrease", "stagnant", "expected_hit_pct"):
        assert word in p.system, (name, word)
    user = decision_messages(p, records[10], metrics_history(records[6:10]))[1]["content"]
    assert "{" not in user and "Minibatch 10 of" in user


def test_first_decision_has_no_history(records):
    user = decision_messages(load(), records[0], [])[1]["content"]
    assert "- none yet" in user


def test_the_schema_asks_for_the_papers_fields():
    assert set(DECISION_SCHEMA["required"]) == {
        "decision",
        "reason",
        "expected_hit_pct",
        "expected_communication",
    }


def test_prompts_load_from_a_directory_and_explain_bad_ones(tmp_path, records):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "system.md").write_text("Be brief.")
    (d / "user.md").write_text("hits {hit_pct:.0f}% and {no_such_field}")
    p = load(str(d))
    with pytest.raises(ValueError, match=r"cannot fill user\.md.*no_such_field"):
        decision_messages(p, records[3], [])
    with pytest.raises(ValueError, match=r"unknown prompt 'nope'.*decision-v1"):
        load("nope")
