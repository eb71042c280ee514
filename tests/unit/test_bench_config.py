"""`rudder bench` configs and the matrix they expand to."""

import pytest

from rudder.evaluation.config import DEFAULT, QUICK, ConfigError, from_dict, load
from rudder.evaluation.matrix import expand
from rudder.evaluation.variants import Variant


def test_the_presets_are_valid_and_their_matrices_distinct():
    for cfg in (DEFAULT, QUICK):
        runs = expand(cfg)
        assert len({r.id for r in runs}) == len(runs)
        assert not runs[0].variant.buffered  # the reference `none` run comes first
    variants = {v.label for v in DEFAULT.variants()}
    assert {"none", "static", "fixed", "periodic", "rudder:llm", "rudder:heuristic"} <= variants
    assert {"rudder:lr", "rudder:rf", "rudder:gbt", "rudder:mlp"} <= variants


def test_toml_overrides_keys_and_replaces_groups(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(
        """
name = "mine"
[dataset.graph]
nodes = 5000
communities = 8
[dataset]
classes = 4
[train]
epochs = 7
[[groups]]
name = "g"
variants = ["none", "rudder:every:4"]
buffers = [0.1]
"""
    )
    cfg = load(path)
    assert cfg.name == "mine" and cfg.train.epochs == 7 and cfg.train.batch_size == 1000
    assert cfg.dataset.graph.nodes == 5000 and cfg.dataset.graph.avg_degree == 20.0
    assert [g.name for g in cfg.groups] == ["g"]
    assert [r.id for r in expand(cfg)] == [
        "m2-1gbit-e7-nobuf-none-r0",
        "m2-1gbit-e7-b10-rudder-every-4-r0",
    ]
    assert load(path, quick=True).train.batch_size == QUICK.train.batch_size


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trian": {"epochs": 3}}, "trian"),
        ({"train": {"epochz": 3}}, "train.epochz"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"dataset": {"classes": 999}}, "classes must lie"),
        ({"groups": [{"name": "g", "variants": ["rudder:oracle"]}]}, "unknown decider"),
        ({"groups": [{"name": "g", "variants": ["belady"]}]}, "offline bound"),
        ({"groups": [{"name": "g", "variants": ["none"], "buffers": [1.5]}]}, "buffers"),
        ({"groups": [{"name": "g", "variants": ["none"], "modes": ["eventually"]}]}, "modes"),
        ({"groups": []}, "matrix is empty"),
    ],
)
def test_bad_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def _matrix(**group):
    return from_dict({"groups": [{"name": "g", **group}]})


def test_axes_that_do_not_apply_collapse():
    cfg = _matrix(
        variants=["none", "fixed", "rudder:llm"],
        buffers=[0.05, 0.25],
        modes=["async", "sync"],
        repeats=2,
    )
    runs = expand(cfg)
    by = {(r.variant.label, r.buffer, r.mode, r.repeat) for r in runs}
    assert {k for k in by if k[0] == "none"} == {("none", None, None, 0), ("none", None, None, 1)}
    assert len([k for k in by if k[0] == "fixed"]) == 4  # 2 buffers x 2 repeats, no mode
    assert len([k for k in by if k[0] == "rudder:llm"]) == 8  # and both modes
    assert len(runs) == 14


def test_runs_shared_by_groups_run_once_and_count_for_each():
    cfg = from_dict(
        {
            "groups": [
                {"name": "a", "variants": ["none", "fixed"]},
                {"name": "b", "variants": ["none", "static"]},
            ]
        }
    )
    runs = expand(cfg)
    assert [(r.variant.label, r.groups) for r in runs] == [
        ("none", ("a", "b")),
        ("fixed", ("a",)),
        ("static", ("b",)),
    ]


def test_without_shaping_shaped_links_run_unshaped_once():
    cfg = _matrix(variants=["none"], bandwidths=["1gbit", "none"])
    assert len(expand(cfg, shaping=True)) == 2
    (only,) = expand(cfg, shaping=False)
    assert only.setting.bandwidth is None


def test_variants_parse_and_resolve_their_deciders(tmp_path):
    assert Variant.parse("rudder") == Variant("rudder", "heuristic")
    assert Variant.parse("periodic:16").label == "periodic:16"
    lr = Variant.parse("rudder:lr")
    assert lr.is_agent and lr.classifier_kind == "lr"
    assert lr.train_decider(tmp_path) == f"classifier:{tmp_path / 'lr.joblib'}"
    own = Variant.parse("rudder:classifier:/models/mine.joblib")
    assert own.is_agent and own.classifier_kind is None and own.slug == "rudder-mine"
    assert own.train_decider(tmp_path) == "classifier:/models/mine.joblib"
    assert not Variant.parse("rudder:every:4").is_agent
    with pytest.raises(ValueError, match="every:P"):
        Variant.parse("rudder:every:0")


def test_a_new_prompt_invalidates_only_the_llm_runs():
    from rudder.evaluation.pipeline import fingerprint

    other = from_dict({"llm": {"prompt": "decision-v2"}})
    for text in ("none", "fixed", "rudder:heuristic", "rudder:gbt"):
        v = Variant.parse(text)
        assert fingerprint(DEFAULT, v) == fingerprint(other, v), text
    llm = Variant.parse("rudder:llm")
    assert fingerprint(DEFAULT, llm) != fingerprint(other, llm)
    teachers = from_dict({"classifiers": {"label_window": 8}})
    gbt = Variant.parse("rudder:gbt")
    assert fingerprint(DEFAULT, gbt) != fingerprint(teachers, gbt)
    assert fingerprint(DEFAULT, llm) == fingerprint(teachers, llm)


def test_the_ood_graph_is_part_of_its_runs_fingerprint():
    from rudder.evaluation.pipeline import fingerprint

    none = Variant.parse("none")
    assert fingerprint(DEFAULT, none, ood=["unseen", 1]) != fingerprint(
        DEFAULT, none, ood=["unseen", 2]
    )


def test_the_drift_group_expands_with_scenarios():
    runs = [r for r in expand(DEFAULT) if "drift" in r.groups]
    scenarios = ("locality", "eval", "temporal")
    assert {r.setting.workload.name for r in runs} == set(scenarios)
    assert all(r.setting.dataset == "drift" and r.setting.drifts for r in runs)
    for sc in scenarios:
        mine = [r for r in runs if r.setting.workload.name == sc]
        nones = [r for r in mine if not r.variant.buffered]
        assert len(nones) == 1 and nones[0].id == f"drift-{sc}-m2-1gbit-e10-nobuf-none-r0"
        labels = {r.variant.label for r in mine}
        assert {"rudder:always", "rudder:never", "rudder:heuristic", "rudder:llm"} <= labels
        assert {"rudder:lr", "rudder:rf", "rudder:gbt", "rudder:mlp", "periodic"} <= labels
        assert {r.buffer for r in mine if r.buffer} == {0.05, 0.25}
        assert len(mine) == 1 + 11 * 2
    # the main group's runs are untouched: stationary, main graph, the old ids
    main = [r for r in expand(DEFAULT) if "main" in r.groups]
    assert all(not r.setting.drifts for r in main)
    assert "m2-1gbit-e30-b25-rudder-heuristic-r0" in {r.id for r in main}
    quick = [r for r in expand(QUICK) if "drift" in r.groups]
    assert [(r.variant.label, r.buffer, r.setting.workload.name) for r in quick] == [
        ("none", None, "locality"),
        ("static", 0.25, "locality"),
        ("rudder:always", 0.25, "locality"),
        ("rudder:heuristic", 0.25, "locality"),
    ]
    rec = quick[0].to_dict()
    assert (rec["dataset"], rec["scenario"], rec["workload"]) == (
        "drift",
        "locality",
        {"name": "locality"},
    )


def test_scenario_knobs_apply_to_their_scenario_alone():
    cfg = _matrix(
        variants=["none"],
        dataset="drift",
        scenarios=["locality", "eval", "temporal"],
        eval_every=3,
        window=0.5,
    )
    runs = expand(cfg)
    assert [r.id for r in runs] == [
        "drift-locality-m2-1gbit-e30-nobuf-none-r0",
        "drift-eval3-m2-1gbit-e30-nobuf-none-r0",
        "drift-temporal-w0.5-s0.1-m2-1gbit-e30-nobuf-none-r0",
    ]
    locality, ev, temporal = (r.setting.workload for r in runs)
    assert locality.eval_every == 2 and locality.window == 0.3  # knobs of other scenarios
    assert ev.eval_every == 3 and temporal.window == 0.5
    assert runs[1].to_dict()["workload"] == {"name": "eval", "eval_every": 3}


def test_fingerprints_differ_by_scenario_and_graph():
    from rudder.evaluation.matrix import Setting
    from rudder.evaluation.pipeline import fingerprint
    from rudder.trainer_hooks.scenarios import Scenario

    v = Variant.parse("rudder:always")
    main = Setting(2, "1gbit", 10)
    assert fingerprint(DEFAULT, v, main) == fingerprint(DEFAULT, v)  # earlier runs stay valid
    prints = {
        fingerprint(DEFAULT, v, Setting(2, "1gbit", 10, dataset, Scenario(name=sc)))
        for dataset in ("main", "drift")
        for sc in ("stationary", "locality", "eval", "temporal")
    }
    assert len(prints) == 8
    eval2 = Setting(2, "1gbit", 10, "drift", Scenario(name="eval"))
    eval3 = Setting(2, "1gbit", 10, "drift", Scenario(name="eval", eval_every=3))
    assert fingerprint(DEFAULT, v, eval2) != fingerprint(DEFAULT, v, eval3)
    # the drift graph's spec counts for drift runs only
    other = from_dict({"drift_data": {"dataset": {"graph": {"nodes": 20_000}}}})
    assert fingerprint(DEFAULT, v, eval2) != fingerprint(other, v, eval2)
    assert fingerprint(DEFAULT, v, main) == fingerprint(other, v, main)
    # ... and for the classifiers, which also learn from the drift references' traces
    gbt = Variant.parse("rudder:gbt")
    assert fingerprint(DEFAULT, gbt, main) != fingerprint(other, gbt, main)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scenarios": ["bursty"]}, r"groups\.0.*scenarios: unknown scenario 'bursty'"),
        ({"scenarios": []}, "scenarios must name"),
        ({"dataset": "products"}, "dataset must be one of main, drift"),
        ({"scenarios": ["temporal"], "window": 0.0}, "window must lie in"),
        ({"scenarios": ["eval"], "eval_every": 0}, "eval_every must be"),
    ],
)
def test_bad_drift_groups_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        _matrix(variants=["none"], **data)


def test_the_drift_graph_is_configurable(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(
        """
[drift_data]
partition = "metis"
batch_size = 50
[drift_data.dataset.graph]
nodes = 10000
locality_scale = 100
[[groups]]
name = "d"
dataset = "drift"
scenarios = ["temporal"]
variants = ["none"]
"""
    )
    cfg = load(path)
    d = cfg.drift_data
    assert (d.partition, d.batch_size, d.window) == ("metis", 50, 8)
    assert d.dataset.graph.nodes == 10_000 and d.dataset.graph.family == "ring"
    assert d.dataset.graph.locality_scale == 100 and d.dataset.train_fraction == 0.3
    with pytest.raises(ConfigError, match=r"drift_data.*partition must be one of"):
        from_dict({"drift_data": {"partition": "spectral"}})


def test_records_from_before_the_drift_study_are_reused(tmp_path):
    import json

    from rudder.evaluation.runs import RECORD, finished

    (run,) = expand(_matrix(variants=["none"]))
    old = {k: v for k, v in run.to_dict().items() if k not in ("dataset", "scenario", "workload")}
    (tmp_path / RECORD).write_text(json.dumps({"run": old, "ok": True, "fingerprint": "f"}))
    assert finished(run, tmp_path, "f")["run"] == run.to_dict()
    (drift,) = expand(_matrix(variants=["none"], dataset="drift", scenarios=["locality"]))
    assert finished(drift, tmp_path, "f") is None
