"""ML classifier deciders: the paper's labels, features shared by training and serving,
training and the model file, fine-tuning, the CLI, and replay with the decider plugged in."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rudder.controller.classifier_features import (
    FEATURE_NAMES,
    HISTORY_SPAN,
    LabelRule,
    collect,
    features,
    label_ready,
    label_replacement,
    samples_from_metrics,
)
from rudder.controller.classifiers import (
    MODEL_KINDS,
    ClassifierDecider,
    TrainConfig,
    evaluate,
    load,
    read_header,
    save,
    train,
    train_on,
)
from rudder.decisions import Decision
from rudder.metrics_trace import read_metrics_per_trainer
from rudder.protocol import Metrics
from rudder.trainer_hooks.policies.registry import ScoredOptions
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.trace import load_trace

FIXTURES = Path(__file__).parents[1] / "fixtures"
TRAIN = FIXTURES / "classifier" / "train"
HELDOUT = FIXTURES / "classifier" / "heldout"
# Labelling needs rounds spaced apart (a window before and after each): the paper's slower
# scoring (gamma 0.9) leaves stale slots only now and then.
SPARSE_ROUNDS = ScoredOptions(scoring_params=(("gamma", 0.9),), admission=False)
ACCESS_TRACE = HELDOUT / "access-rank-0.npz"  # the held-out graph, trainer 0


# ---------------------------------------------------------------------------------------------
# Hand-built metrics


def run(steps, capacity: int = 100, total: int | None = None) -> list[Metrics]:
    """Metrics from (remote, hits, rows, replaced) per minibatch, counters kept consistent."""
    out, last_round, rounds, tot_hits, tot_remote = [], -1, 0, 0, 0
    total = total if total is not None else len(steps)
    for t, (remote, hits, rows, replaced) in enumerate(steps):
        if replaced:
            last_round, rounds = t, rounds + 1
        tot_hits, tot_remote = tot_hits + hits, tot_remote + remote
        out.append(
            Metrics(
                trainer=0,
                minibatch=t,
                epoch=0,
                total_minibatches=total,
                remote_inputs=remote,
                local_inputs=3 * remote,
                hits=hits,
                misses=remote - hits,
                extra_rows=rows - (remote - hits),
                rows_fetched=rows,
                bytes_fetched=4 * rows,
                hit_pct=100.0 * hits / remote,
                hit_pct_window=100.0 * hits / remote,
                hit_pct_cumulative=100.0 * tot_hits / tot_remote,
                rows_fetched_window=float(rows),
                replaced=replaced,
                last_replaced=replaced or (out[-1].last_replaced if out else 0),
                last_replaced_pct=0.0,
                since_replacement=t - last_round if last_round >= 0 else -1,
                replacements=rounds,
                buffer_capacity=capacity,
                buffer_fill=capacity,
                stale_slots=10,
            )
        )
    return out


def flat(n: int, hits: int = 40, rows: int = 60):
    return [(100, hits, rows, 0)] * n


def test_label_good_when_hits_gain_beats_communication_growth():
    # before: 40% hits, 60 rows; the round at t=3 pulls 20 extra rows; after it 50% hits.
    ms = run([*flat(3), (100, 40, 80, 20), (100, 50, 50, 0), (100, 50, 50, 0), (100, 50, 50, 0)])
    out = label_replacement(ms, 3)
    assert out.before == (0, 2) and out.after == (3, 6)
    assert out.hit_pct_before == 40.0 and out.hit_pct_after == 50.0  # from t + 1 on
    assert out.rows_before == 60.0 and out.rows_after == 57.5  # t's pull counts
    assert out.d_hit == 10.0 and out.d_comm == pytest.approx(-100 * 2.5 / 60)
    assert out.good


def test_label_bad_when_communication_grows_more_than_hits():
    ms = run([*flat(3), (100, 40, 200, 140), (100, 42, 58, 0), (100, 42, 58, 0), (100, 42, 58, 0)])
    out = label_replacement(ms, 3)
    assert out.d_hit == pytest.approx(2.0) and out.d_comm > 2.0
    assert not out.good


def test_label_tie_is_bad():
    # Exactly dH = dC = 5: hits 40% -> 45%, rows 60 -> 63 (+5%).
    ms = run([*flat(3), (100, 40, 63, 5), (100, 45, 63, 0), (100, 45, 63, 0), (100, 45, 63, 0)])
    out = label_replacement(ms, 3)
    assert out.d_hit == 5.0 and out.d_comm == 5.0
    assert not out.good
    nothing = run([*flat(3), (100, 40, 60, 1), *flat(3)])
    assert label_replacement(nothing, 3).d_hit == 0.0 == label_replacement(nothing, 3).d_comm
    assert not label_replacement(nothing, 3).good


def test_label_windows_stop_at_neighbouring_rounds():
    steps = flat(12)
    for t in (2, 6, 8):
        steps[t] = (100, 40, 60, 5)
    ms = run(steps)
    first, middle, last = (label_replacement(ms, t) for t in (2, 6, 8))
    assert (first.before, first.after) == ((0, 1), (2, 5))  # no round before; next at 6
    assert (middle.before, middle.after) == ((3, 5), (6, 7))  # after the round at 2; next at 8
    assert (last.before, last.after) == ((7, 7), (8, 11))  # window 4 after; none later
    assert label_replacement(ms, 2, LabelRule(window=2)).before == (0, 1)


def test_label_needs_complete_windows():
    back_to_back = run([*flat(2), (100, 40, 60, 5), (100, 40, 60, 5), *flat(4)])
    assert label_replacement(back_to_back, 3) is None  # nothing between the two rounds
    assert label_replacement(back_to_back, 2) is None  # after-window of one minibatch
    near_end = run([*flat(3), (100, 40, 60, 5), (100, 50, 50, 0)])
    assert not label_ready(near_end, 3) and label_replacement(near_end, 3) is None
    assert label_ready(near_end + run(flat(7))[5:], 3)
    with pytest.raises(ValueError, match="no replacement round"):
        label_replacement(near_end, 0)


def test_label_nothing_pulled_before():
    ms = run([(100, 100, 0, 0), (100, 100, 0, 0), (100, 100, 10, 5), *[(100, 100, 0, 0)] * 3])
    out = label_replacement(ms, 2)
    assert out.d_comm == math.inf and not out.good


def test_samples_use_the_decision_minibatch_features():
    ms = run([*flat(3), (100, 40, 80, 20), (100, 50, 50, 0), (100, 50, 50, 0), (100, 50, 50, 0)])
    got = samples_from_metrics(ms)
    assert (got.rounds, got.unlabelled, len(got.samples)) == (1, 0, 1)
    s = got.samples[0]
    assert s.minibatch == 2 and s.label == 1
    assert np.array_equal(s.x, features(ms[2], ms[:2]))


# ---------------------------------------------------------------------------------------------
# Features


def fixture_metrics() -> list[Metrics]:
    path = sorted(TRAIN.glob("*.jsonl"))[0]
    return read_metrics_per_trainer(path)[0]


def test_features_are_scale_free_and_ignore_old_history():
    ms = fixture_metrics()
    x = features(ms[20], ms[:20])
    assert x.shape == (len(FEATURE_NAMES),) and x.dtype == np.float64
    assert np.isfinite(x).all() and (np.abs(x) <= 5).all()
    assert np.array_equal(x, features(ms[20], ms[20 - HISTORY_SPAN : 20]))
    assert np.array_equal(x, features(ms[20], list(reversed(ms))))  # later records ignored
    assert features(ms[0], []).shape == x.shape


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    paths = {}
    for kind in MODEL_KINDS:
        model, _ = train([TRAIN], TrainConfig(model=kind, seed=0))
        paths[kind] = save(model, out / f"{kind}.joblib")
    return paths


def test_serving_features_equal_training_features(models):
    """The decider's feature vector for every minibatch is the training path's, bit for bit."""
    ms = fixture_metrics()
    decider = ClassifierDecider(models["lr"])
    served = []
    for m in ms:
        decider.decide(m)
        served.append(decider.last_features)
    for i, m in enumerate(ms):
        assert np.array_equal(served[i], features(m, ms[:i]))
    for s in samples_from_metrics(ms).samples:
        assert np.array_equal(s.x, served[s.minibatch])


# ---------------------------------------------------------------------------------------------
# Training and the model file


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_trains_round_trips_and_evaluates(models, kind):
    model = load(models[kind])
    assert model.kind == kind and model.header["feature_names"] == list(FEATURE_NAMES)
    report = model.header["report"]
    assert report["samples"] == report["train_samples"] + report["test_samples"] > 50
    assert sum(map(sum, report["confusion"])) == report["test_samples"]
    ds = collect([HELDOUT])
    again, _ = train([TRAIN], TrainConfig(model=kind, seed=0))
    assert np.array_equal(model.replace_probability(ds.X), again.replace_probability(ds.X))
    result = evaluate(models[kind], [HELDOUT])
    assert result["samples"] == len(ds.y) and 0.0 <= result["accuracy"] <= 1.0
    if kind in ("rf", "gbt"):  # the forests beat always-answering-the-majority on a new graph
        assert result["accuracy"] > result["majority_baseline"]


def test_mlp_does_not_collapse_to_replace(models):
    """The authors' MLP applied sigmoid twice: every probability > 0.5, always replace."""
    model = load(models["mlp"])
    p = model.replace_probability(collect([TRAIN, HELDOUT]).X)
    assert p.min() < 0.2 and p.max() > 0.8
    assert 0.2 < np.mean(p > 0.5) < 0.9


def rewrite_header(src: Path, dst: Path, **changes) -> Path:
    header_line, payload = src.read_bytes().split(b"\n", 1)
    header = {**json.loads(header_line), **changes}
    dst.write_bytes(json.dumps(header).encode() + b"\n" + payload)
    return dst


def test_other_feature_names_are_refused(models, tmp_path):
    names = [*FEATURE_NAMES[:-1], "interval_index"]
    bad = rewrite_header(models["lr"], tmp_path / "m.joblib", feature_names=names)
    missing = rf"missing \['{FEATURE_NAMES[-1]}'\]"
    with pytest.raises(ValueError, match=rf"other features.*{missing}.*interval_index"):
        load(bad)
    with pytest.raises(ValueError, match="other features"):
        ClassifierDecider(bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 99}, "format version 99"),
        ({"sklearn_version": "0.24.2"}, "scikit-learn 0.24.2"),
        ({"format": "something-else"}, "not a rudder classifier"),
        ({"payload_sha256": "0" * 64}, "checksum"),
    ],
)
def test_header_checks(models, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load(rewrite_header(models["lr"], tmp_path / "m.joblib", **changes))


def test_header_reads_without_unpickling(models, tmp_path):
    header = read_header(models["gbt"])
    assert header["model"] == "gbt" and header["training"]["samples"] > 50
    (tmp_path / "junk.joblib").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="not a rudder classifier"):
        read_header(tmp_path / "junk.joblib")


def test_training_errors_are_clear(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty metrics trace"):
        train([empty], TrainConfig())
    no_rounds = tmp_path / "never.jsonl"
    no_rounds.write_text("".join(json.dumps(m.to_dict()) + "\n" for m in run(flat(10))))
    with pytest.raises(ValueError, match="no replacement rounds"):
        train([no_rounds], TrainConfig())
    good_only = run([*flat(3), (100, 40, 60, 5), *[(100, 60, 40, 0)] * 4] * 3)
    good_only = [Metrics(**{**m.to_dict(), "minibatch": i}) for i, m in enumerate(good_only)]
    one_class = collect([_write(tmp_path / "good.jsonl", good_only)])
    with pytest.raises(ValueError, match="labelled good: a classifier needs both classes"):
        train_on(one_class, TrainConfig())
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="svm")


def _write(path: Path, ms: list[Metrics]) -> Path:
    path.write_text("".join(json.dumps(m.to_dict()) + "\n" for m in ms))
    return path


# ---------------------------------------------------------------------------------------------
# The decider


def test_decider_interface_and_predicted_effect(models):
    decider = ClassifierDecider(models["gbt"])
    assert decider.spec == f"classifier:{models['gbt']}"
    assert decider.first() is Decision.SKIP
    decisions = {decider.decide(m) for m in fixture_metrics()}
    assert decisions == {Decision.REPLACE, Decision.SKIP}
    assert 0.0 <= decider.last_probability <= 1.0
    assert decider.predicted_effect(Decision.REPLACE) == {
        "expected_hit_pct": "increase",
        "expected_communication": "decrease",
    }
    decider.decide(fixture_metrics()[-1])  # (a new run: the minibatch went back)
    assert set(decider.predicted_effect(Decision.SKIP).values()) == {"stagnant"}
    assert decider.predicted_effect() == decider.predicted_effect(decider.last_decision)
    assert decider.stats.decisions == len(fixture_metrics()) + 1


def test_replay_with_the_decider_plugged_in(models):
    trace = load_trace(ACCESS_TRACE)
    for latency in (1, 3):
        decider = ClassifierDecider(models["rf"])
        config = ReplayConfig(buffer_fraction=0.25, latency=latency)
        result = replay(trace, "rudder", config, decider=decider)
        assert result.decider == f"classifier:{models['rf']}"
        assert result.totals.minibatches == trace.num_minibatches
        assert result.replace_decisions > 0 and result.totals.replacements > 0
        # decide() ran once per request: every minibatch but those dropped while one was in flight
        assert decider.stats.decisions == trace.num_minibatches - result.dropped_requests
        assert (result.dropped_requests > 0) == (latency > 1)


@pytest.mark.parametrize("kind", ["mlp", "lr"])
def test_finetuning_updates_after_k_labelled_decisions(models, kind):
    """Own replace decisions are labelled from later metrics; every K labels, an update."""
    K = 2
    trace = load_trace(ACCESS_TRACE)
    decider = ClassifierDecider(models[kind], finetune_every=K, background=False)
    X = collect([HELDOUT]).X
    before = decider.model.replace_probability(X)
    for fraction in (0.05, 0.25):
        config = ReplayConfig(buffer_fraction=fraction, scored=SPARSE_ROUNDS)
        replay(trace, "rudder", config, decider=decider)
    s = decider.stats
    assert s.labelled >= K
    assert s.finetune_updates == s.labelled // K
    assert not np.array_equal(before, decider.model.replace_probability(X))
    assert np.array_equal(before, load(models[kind]).replace_probability(X))  # file untouched


def test_a_new_run_starts_a_fresh_history(models):
    ms = fixture_metrics()
    decider = ClassifierDecider(models["lr"])
    for m in ms[:30]:
        decider.decide(m)
    decider.decide(ms[5])  # the trainer restarted: minibatch 5 again
    assert np.array_equal(decider.last_features, features(ms[5], []))


def test_online_labels_equal_offline_labels(models):
    """The decider labels its own rounds exactly as training labels the recorded metrics."""
    decider = ClassifierDecider(models["lr"], finetune_every=1000)  # label, never update
    recorded: list[Metrics] = []
    config = ReplayConfig(buffer_fraction=0.25, scored=SPARSE_ROUNDS)
    replay(load_trace(ACCESS_TRACE), "rudder", config, decider=decider, on_metrics=recorded.append)
    offline = [s.outcome for s in samples_from_metrics(recorded).samples]
    assert len(offline) >= 2
    assert list(decider.outcomes) == offline


def test_background_refit_is_swapped_in_at_the_next_decision(models):
    trace = load_trace(ACCESS_TRACE)
    decider = ClassifierDecider(models["gbt"], finetune_every=2, background=True)
    X = collect([HELDOUT]).X
    before = decider.model.replace_probability(X)
    last: list[Metrics] = []
    for fraction in (0.05, 0.25):
        config = ReplayConfig(buffer_fraction=fraction, scored=SPARSE_ROUNDS)
        replay(trace, "rudder", config, decider=decider, on_metrics=last.append)
    assert decider.stats.labelled >= 2
    assert decider.wait_finetune(timeout_s=60)
    decider.decide(last[-1])  # a finished refit is swapped in here, never mid-decision
    assert decider.stats.finetune_updates >= 1
    assert not np.array_equal(before, decider.model.replace_probability(X))
    decider.close()


def test_without_finetuning_the_model_never_changes(models):
    decider = ClassifierDecider(models["mlp"])
    X = collect([HELDOUT]).X
    before = decider.model.replace_probability(X)
    replay(load_trace(ACCESS_TRACE), "rudder", ReplayConfig(buffer_fraction=0.25), decider=decider)
    assert decider.stats.labelled == 0 == decider.stats.finetune_updates
    assert np.array_equal(before, decider.model.replace_probability(X))


# ---------------------------------------------------------------------------------------------
# Import cost and the CLI


def test_import_is_cheap():
    code = (
        "import sys\nimport rudder.controller.classifiers\n"
        "print(sorted(m for m in ('sklearn', 'torch', 'dgl', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def rudder(*args):
    return subprocess.run(
        [sys.executable, "-m", "rudder", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_train_and_eval(tmp_path):
    out = tmp_path / "m.joblib"
    proc = rudder("classifier", "train", "--traces", TRAIN, "--model", "lr", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "majority baseline" in proc.stdout
    assert "confusion" in proc.stdout and out.exists()
    proc = rudder("classifier", "eval", "--model", out, "--traces", HELDOUT, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["samples"] == len(collect([HELDOUT]).y)


def test_cli_empty_trace_exits_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = rudder("classifier", "train", "--traces", empty, "--out", tmp_path / "m.joblib")
    assert proc.returncode == 2
    assert "empty metrics trace" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.joblib").exists()
