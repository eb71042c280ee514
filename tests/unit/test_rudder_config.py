"""RudderConfig: validation, the environment over keyword arguments, the run's config."""

import dataclasses

import pytest

from rudder.trainer_hooks.distdgl.config import TrainingOptions
from rudder.trainer_hooks.options import RudderConfig
from tests.configs import worker_config


def test_defaults_are_valid():
    cfg = RudderConfig()
    assert cfg.policy == "rudder" and cfg.decider == "heuristic"
    assert cfg.buffer_fraction == 0.25 and cfg.buffer_rows is None
    assert cfg.agent == "auto" and cfg.agent_mode == "async"
    assert cfg.out_dir is None and not cfg.record_trace and not cfg.verify_features
    assert cfg.fanouts == ()
    assert not cfg.uses_sidecar
    assert str(cfg.decider_spec) == "heuristic"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RudderConfig().policy = "lru"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "bogus"}, r"unknown policy 'bogus'; choose one of .*rudder"),
        ({"policy": "lru:3"}, r"takes no argument"),
        ({"policy": "periodic:0"}, r"P >= 1"),
        ({"policy": "belady"}, r"offline bound.*rudder replay"),
        ({"policy": "best-static"}, r"offline bound"),
        ({"policy": "infinite"}, r"offline bound"),
        ({"decider": "sometimes"}, r"unknown decider 'sometimes'; choose one of .*heuristic"),
        ({"decider": "every:0"}, r"every:P needs a positive integer"),
        ({"decider": "classifier"}, r"classifier:PATH"),
        ({"buffer_fraction": 1.5}, r"buffer_fraction must lie in \[0, 1\], got 1.5"),
        ({"buffer_fraction": -0.1}, r"buffer_fraction must lie in \[0, 1\]"),
        ({"buffer_rows": -1}, r"buffer_rows must be >= 0"),
        ({"agent": "cloud"}, r"agent must be one of .*sidecar.*'cloud'"),
        ({"agent_mode": "later"}, r"agent_mode must be one of .*'later'"),
        ({"agent": "inproc", "decider": "llm"}, r"'llm' runs in the agent sidecar.*sidecar"),
        ({"agent": "inproc", "decider": "classifier:m.pkl"}, r"runs in the agent sidecar"),
        ({"candidate_window": 0}, r"candidate_window must be >= 1"),
        ({"epochs": -1}, r"epochs >= 0"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RudderConfig(**kwargs)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_fraction_bounds_are_inclusive(fraction):
    assert RudderConfig(buffer_fraction=fraction).buffer_fraction == fraction


def test_periodic_takes_a_period():
    assert RudderConfig(policy="periodic:8").policy == "periodic:8"


# -- from_env ----------------------------------------------------------------------------------


def test_from_env_without_variables_is_the_kwargs():
    cfg = RudderConfig.from_env({}, policy="lru", buffer_fraction=0.1)
    assert cfg == RudderConfig(policy="lru", buffer_fraction=0.1)
    assert RudderConfig.from_env({}) == RudderConfig()


def test_environment_wins_over_kwargs():
    env = {"RUDDER_POLICY": "fixed", "RUDDER_BUFFER_FRACTION": "0.05", "UNRELATED": "x"}
    cfg = RudderConfig.from_env(env, policy="lru", buffer_fraction=0.5, epochs=4)
    assert cfg.policy == "fixed"
    assert cfg.buffer_fraction == 0.05
    assert cfg.epochs == 4  # not in the environment: the kwarg stays


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("RUDDER_POLICY", "s3fifo")
    monkeypatch.delenv("RUDDER_RUN_CONFIG", raising=False)
    assert RudderConfig.from_env(policy="lru").policy == "s3fifo"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_bool_variables(raw, value):
    assert RudderConfig.from_env({"RUDDER_VERIFY_FEATURES": raw}).verify_features is value
    assert RudderConfig.from_env({"RUDDER_FILL_FREE": raw}).fill_free is value


def test_typed_variables():
    env = {
        "RUDDER_BUFFER_FRACTION": "0.125",
        "RUDDER_BUFFER_ROWS": "64",
        "RUDDER_EPOCHS": "3",
        "RUDDER_BATCH_SIZE": "512",
        "RUDDER_CANDIDATE_WINDOW": "2",
        "RUDDER_FANOUTS": "10,25",
        "RUDDER_DECIDER": "every:4",
        "RUDDER_AGENT_MODE": "sync",
        "RUDDER_RUN_ID": "run-7",
        "RUDDER_AGENT_ENDPOINT": "ipc:///tmp/agent.sock",
        "RUDDER_OUT_DIR": "/tmp/run",
    }
    cfg = RudderConfig.from_env(env)
    assert cfg.buffer_fraction == 0.125 and isinstance(cfg.buffer_fraction, float)
    assert cfg.buffer_rows == 64 and isinstance(cfg.buffer_rows, int)
    assert cfg.epochs == 3 and cfg.batch_size == 512 and cfg.candidate_window == 2
    assert cfg.fanouts == (10, 25)
    assert cfg.decider == "every:4" and cfg.agent_mode == "sync" and cfg.run_id == "run-7"
    assert cfg.agent_endpoint == "ipc:///tmp/agent.sock" and cfg.out_dir == "/tmp/run"


@pytest.mark.parametrize(("raw", "fanouts"), [("10,25", (10, 25)), ("5 10 15", (5, 10, 15))])
def test_tuple_variables(raw, fanouts):
    assert RudderConfig.from_env({"RUDDER_FANOUTS": raw}).fanouts == fanouts


@pytest.mark.parametrize("raw", ["none", "None", ""])
def test_optional_variables_can_be_unset(raw):
    cfg = RudderConfig.from_env(
        {"RUDDER_BUFFER_ROWS": raw, "RUDDER_OUT_DIR": raw}, buffer_rows=5, out_dir="/x"
    )
    assert cfg.buffer_rows is None and cfg.out_dir is None


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("RUDDER_BUFFER_FRACTION", "a lot"),
        ("RUDDER_BUFFER_ROWS", "1.5"),
        ("RUDDER_EPOCHS", "three"),
        ("RUDDER_FILL_FREE", "maybe"),
        ("RUDDER_FANOUTS", "10,x"),
    ],
)
def test_a_bad_value_names_the_variable(var, raw):
    with pytest.raises(ValueError, match=var) as e:
        RudderConfig.from_env({var: raw})
    assert repr(raw) in str(e.value)


def test_a_parsed_but_invalid_value_is_still_checked():
    with pytest.raises(ValueError, match="buffer_fraction"):
        RudderConfig.from_env({"RUDDER_BUFFER_FRACTION": "2"})
    with pytest.raises(ValueError, match="offline bound"):
        RudderConfig.from_env({"RUDDER_POLICY": "belady"})


def _worker_config(tmp_path, **options):
    return worker_config(str(tmp_path / "run"), **options)


def test_run_config_sets_the_runs_options_and_out_dir(tmp_path):
    path = tmp_path / "run.json"
    _worker_config(
        tmp_path,
        policy="periodic:16",
        decider="always",
        buffer_fraction=0.1,
        epochs=3,
        batch_size=64,
        fanouts=(5, 10),
        record_trace=True,
        candidate_window=2,
        fill_free=False,
        agent_mode="sync",
    ).save(path)
    cfg = RudderConfig.from_env(
        {"RUDDER_RUN_CONFIG": str(path)},
        policy="lru",
        buffer_fraction=0.9,
        agent_endpoint="ipc:///stale.sock",
        out_dir="/elsewhere",
    )
    assert cfg.policy == "periodic:16" and cfg.decider == "always"
    assert cfg.buffer_fraction == 0.1 and cfg.epochs == 3 and cfg.batch_size == 64
    assert cfg.fanouts == (5, 10) and cfg.record_trace and cfg.candidate_window == 2
    assert cfg.fill_free is False and cfg.agent_mode == "sync"
    assert cfg.out_dir == str(tmp_path / "run")
    assert cfg.agent_endpoint is None  # the sidecar's endpoint comes from its own variable


def test_variables_win_over_the_run_config(tmp_path):
    path = tmp_path / "run.json"
    _worker_config(tmp_path, policy="rudder", decider="llm", buffer_fraction=0.1).save(path)
    env = {
        "RUDDER_RUN_CONFIG": str(path),
        "RUDDER_AGENT_ENDPOINT": "ipc:///tmp/s.sock",
        "RUDDER_BUFFER_FRACTION": "0.3",
        "RUDDER_RUN_ID": "r1",
    }
    cfg = RudderConfig.from_env(env)
    assert cfg.decider == "llm" and cfg.buffer_fraction == 0.3
    assert cfg.agent_endpoint == "ipc:///tmp/s.sock" and cfg.run_id == "r1"
    assert cfg.uses_sidecar


def test_from_options_takes_the_shared_fields():
    opts = TrainingOptions(policy="fixed", buffer_fraction=0.2, epochs=2, fanouts=(3, 4))
    cfg = RudderConfig.from_options(opts, out_dir="/o")
    assert cfg.policy == "fixed" and cfg.buffer_fraction == 0.2 and cfg.epochs == 2
    assert cfg.fanouts == (3, 4) and cfg.out_dir == "/o"
    assert RudderConfig.from_options(opts, policy="lru").policy == "lru"


@pytest.mark.parametrize(
    ("policy", "decider", "agent", "sidecar"),
    [
        ("rudder", "heuristic", "auto", False),
        ("rudder", "always", "auto", False),
        ("rudder", "every:4", "auto", False),
        ("rudder", "llm", "auto", True),
        ("rudder", "classifier:m.pkl", "auto", True),
        ("rudder", "heuristic", "sidecar", True),
        ("rudder", "llm", "sidecar", True),
        ("rudder", "heuristic", "inproc", False),
        ("fixed", "heuristic", "sidecar", False),
        ("static", "llm", "auto", False),
        ("periodic:4", "llm", "sidecar", False),
        ("lru", "llm", "auto", False),
        ("none", "heuristic", "sidecar", False),
    ],
)
def test_uses_sidecar(policy, decider, agent, sidecar):
    assert RudderConfig(policy=policy, decider=decider, agent=agent).uses_sidecar is sidecar
