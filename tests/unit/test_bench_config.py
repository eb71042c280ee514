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
