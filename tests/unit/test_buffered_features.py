"""BufferedFeatures, the public hook: exact features, loops, records, files, replayable traces.

A torch tensor stands in for the ``DistTensor`` (``source.__getitem__``); ids ``LO..HI`` are
the partition's own, everything else is remote (DistDGL's relabelling).
"""

import threading
import time

import numpy as np
import pytest
import torch
from conftest import random_batches

from rudder.decisions import Decider, Decision
from rudder.metrics_trace import read_metrics_trace
from rudder.trainer_hooks.buffered import Batch, BufferedFeatures
from rudder.trainer_hooks.options import RudderConfig
from rudder.trainer_hooks.policies import POLICY_NAMES
from rudder.trainer_hooks.policies.registry import OFFLINE_POLICIES
from rudder.trainer_hooks.replay import ReplayConfig, replay
from rudder.trainer_hooks.results import PartitionFacts, TrainerResults
from rudder.trainer_hooks.trace import load_trace

ONLINE = [p for p in POLICY_NAMES if p not in OFFLINE_POLICIES]
N, LO, HI, F = 400, 100, 250, 8
REMOTE = N - (HI - LO)
RANKING = np.concatenate([np.arange(LO), np.arange(HI, N)]).astype(np.int64)


@pytest.fixture(scope="module")
def store():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, F, generator=g)


def _facts(**kw):
    return PartitionFacts(
        owned=(LO, HI), remote_nodes=REMOTE, feat_dim=F, prefill_ranking=RANKING, **kw
    )


def _feats(store, **cfg):
    return BufferedFeatures(store.__getitem__, _facts(), RudderConfig(**cfg))


def _input_nodes(rng, n=25):
    # Some local (LO..HI), some remote, in a scrambled order like DGL's blocks.
    out = []
    for remote in random_batches(rng, n, universe=REMOTE, max_len=60):
        remote = np.where(remote < LO, remote, remote + (HI - LO))
        local = rng.choice(np.arange(LO, HI), size=int(rng.integers(0, 40)), replace=False)
        ids = rng.permutation(np.concatenate([remote, local]))
        out.append(torch.from_numpy(ids.astype(np.int64)))
    return out


def _loader(rng, n=12):
    """(input_nodes, seeds, blocks) items, like DGL's node data loaders."""
    return [
        (ids, ids[: min(4, len(ids))].clone(), f"blocks-{i}")
        for i, ids in enumerate(_input_nodes(rng, n))
    ]


def _n_remote(ids):
    return int(((ids < LO) | (ids >= HI)).sum())


def _lookahead_threads():
    return {t for t in threading.enumerate() if t.name == "rudder-lookahead" and t.is_alive()}


def _no_new_lookahead(before, wait_s=2.0):
    deadline = time.monotonic() + wait_s
    while _lookahead_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    return not (_lookahead_threads() - before)


class EveryThird(Decider):
    """Replaces on every third minibatch and remembers what it was asked about."""

    name = "every-third"

    def __init__(self):
        self.seen = []

    def first(self):
        return Decision.REPLACE

    def decide(self, metrics):
        self.seen.append(metrics.minibatch)
        return Decision.REPLACE if (metrics.minibatch + 1) % 3 == 0 else Decision.SKIP


class AlwaysReplace(Decider):
    name = "always-replace"

    def __init__(self):
        self.calls = 0

    def first(self):
        return Decision.REPLACE

    def decide(self, metrics):
        self.calls += 1
        return Decision.REPLACE


# -- exact features, every policy --------------------------------------------------------------

CASES = [(p, "heuristic") for p in ONLINE] + [("rudder", "always")]


@pytest.mark.parametrize(("policy", "decider"), CASES)
@pytest.mark.parametrize("fraction", [0.0, 0.04, 0.3])
def test_reads_equal_the_plain_source(policy, decider, fraction, store, rng):
    feats = _feats(store, policy=policy, decider=decider, buffer_fraction=fraction)
    remote_inputs = 0
    for ids in _input_nodes(rng):
        x = feats[ids]
        assert x.dtype == store.dtype and x.shape == (ids.shape[0], F)
        assert torch.equal(x, store[ids])
        remote_inputs += _n_remote(ids)
    s = feats.summary()
    t = s["totals"]
    assert t["minibatches"] == 25
    assert t["remote_inputs"] == remote_inputs
    assert t["hits"] + t["misses"] == remote_inputs
    assert t["rows_fetched"] == t["misses"] + t["extra_rows"] + t["prefill_rows"]
    assert s["capacity"] == (0 if policy == "none" else round(fraction * REMOTE))
    assert s["hit_rate"] == pytest.approx(t["hits"] / remote_inputs)
    if s["capacity"] > 0:
        assert t["hits"] > 0
    else:
        assert t["hits"] == 0
    feats.close()


def test_fetch_reports_the_split(store, rng):
    feats = _feats(store, policy="lru", buffer_fraction=0.3)
    for t, ids in enumerate(_input_nodes(rng, 8)):
        f = feats.fetch(ids)
        assert torch.equal(f.x, store[ids])
        remote = (ids < LO) | (ids >= HI)
        assert np.array_equal(f.remote_ids, ids[remote].numpy())
        assert f.n_local == int((~remote).sum())
        assert f.metrics.minibatch == t and f.metrics.local_inputs == f.n_local
        assert f.metrics.hits == f.plan.n_hits and f.metrics.remote_inputs == int(remote.sum())


def test_plain_reads_make_one_whole_run_epoch(store, rng):
    feats = _feats(store, policy="fixed", buffer_fraction=0.3)
    batches = _input_nodes(rng, 6)
    for ids in batches:
        feats[ids]
    s = feats.summary()
    assert len(s["epochs"]) == 1
    assert s["epochs"][0]["minibatches"] == 6
    assert s["epochs"][0]["remote_inputs"] == sum(_n_remote(ids) for ids in batches)


# -- prefetch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [True, False])
def test_prefetch_appends_the_features_in_order(overlap, store, rng):
    loader = _loader(rng)
    feats = _feats(store, policy="rudder", buffer_fraction=0.2)
    got = list(feats.prefetch(loader, overlap=overlap))
    assert len(got) == len(loader)
    for item, out in zip(loader, got, strict=True):
        assert len(out) == 4
        assert out[0] is item[0] and out[1] is item[1] and out[2] == item[2]
        assert torch.equal(out[3], store[item[0]])
    assert feats.summary()["totals"]["minibatches"] == len(loader)
    feats.close()


@pytest.mark.parametrize("overlap", [True, False])
def test_prefetch_appends_the_seeds_labels(overlap, store, rng):
    loader = _loader(rng)
    labels = torch.arange(N) * 7 % 5
    feats = _feats(store, policy="s3fifo", buffer_fraction=0.2)
    got = list(feats.prefetch(loader, labels=labels, overlap=overlap))
    assert len(got) == len(loader)
    for item, out in zip(loader, got, strict=True):
        assert len(out) == 5
        assert torch.equal(out[3], store[item[0]])
        assert torch.equal(out[4], labels[item[1]])
    feats.close()


def test_prefetch_takes_a_labels_callable_and_a_device(store, rng):
    loader = _loader(rng, 5)
    feats = _feats(store, policy="lfu", buffer_fraction=0.2)
    got = list(feats.prefetch(loader, labels=lambda seeds: seeds * 2, device="cpu"))
    for item, out in zip(loader, got, strict=True):
        assert out[3].device.type == "cpu" and torch.equal(out[3], store[item[0]])
        assert torch.equal(out[4], item[1] * 2)
    feats.close()


@pytest.mark.parametrize("overlap", [True, False])
def test_breaking_out_early_stops_the_lookahead(overlap, store, rng):
    before = _lookahead_threads()
    loader = _loader(rng, 20)
    feats = _feats(store, policy="rudder", buffer_fraction=0.2)
    for seen, (_, _, _, x) in enumerate(feats.prefetch(loader, overlap=overlap), 1):
        assert x.shape[1] == F
        if seen == 3:
            break
    assert _no_new_lookahead(before)
    epochs = feats.results.epochs
    assert len(epochs) == 1 and epochs[0]["epoch"] == 0
    # The look-ahead may have fetched up to two minibatches more than the loop consumed.
    assert 3 <= feats.summary()["totals"]["minibatches"] <= 3 + (2 if overlap else 0)
    assert feats.epoch == 1
    # The next epoch runs normally after an interrupted one.
    again = list(feats.prefetch(loader[:4], overlap=overlap))
    assert [torch.equal(o[3], store[i[0]]) for i, o in zip(loader, again, strict=False)] == [
        True
    ] * 4
    feats.close()


def test_loader_errors_reach_the_loop_and_stop_the_lookahead(store, rng):
    before = _lookahead_threads()
    items = _loader(rng, 6)

    def loader():
        yield from items[:2]
        raise OSError("sampler died")

    feats = _feats(store, policy="rudder", buffer_fraction=0.2)
    with pytest.raises(OSError, match="sampler died"):
        for _ in feats.prefetch(loader()):
            pass
    assert _no_new_lookahead(before)
    assert len(feats.results.epochs) == 1
    feats.close()


# -- batches, epochs and steps -----------------------------------------------------------------


@pytest.mark.parametrize("overlap", [True, False])
def test_epoch_records_sum_to_the_totals(overlap, store, rng):
    loaders = [_loader(rng, n) for n in (7, 4, 9)]
    feats = _feats(store, policy="rudder", buffer_fraction=0.2, epochs=3)
    for loader in loaders:
        for b in feats.batches(loader, overlap=overlap):
            assert isinstance(b, Batch)
            assert torch.equal(b.x, store[b.item[0]])
    epochs = feats.results.epochs
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [e["minibatches"] for e in epochs] == [len(ld) for ld in loaders]
    totals = feats.summary()["totals"]
    assert totals["prefill_rows"] == 0  # rudder starts empty: every row fetched is an epoch's
    for key in ("minibatches", "remote_inputs", "hits", "rows_fetched", "bytes_fetched"):
        assert sum(e[key] for e in epochs) == totals[key], key
    assert [e["remote_inputs"] for e in epochs] == [
        sum(_n_remote(it[0]) for it in ld) for ld in loaders
    ]
    feats.close()


def test_epoch_records_survive_a_slow_consumer_start(store, rng, monkeypatch):
    """The epoch's starting totals are taken before the look-ahead fetches anything.

    A consumer thread descheduled right after it started the look-ahead (simulated by a
    slow ``begin_epoch``) must not lose the epoch's first minibatches to the previous epoch.
    """
    begin = TrainerResults.begin_epoch

    def slow_begin(self, epoch):
        time.sleep(0.1)
        return begin(self, epoch)

    monkeypatch.setattr(TrainerResults, "begin_epoch", slow_begin)
    feats = _feats(store, policy="rudder", buffer_fraction=0.2, epochs=2)
    loaders = [_loader(rng, 6), _loader(rng, 6)]
    for loader in loaders:
        for _ in feats.prefetch(loader, overlap=True):
            pass
    assert [e["minibatches"] for e in feats.results.epochs] == [6, 6]
    feats.close()


def test_steps_measure_the_loop_body(store, rng):
    loader = _loader(rng, 6)
    feats = _feats(store, policy="rudder", buffer_fraction=0.2)
    for b in feats.batches(loader):
        b.step["loss"] = 0.5
        time.sleep(0.005)
    steps = feats.results.steps
    assert [s["minibatch"] for s in steps] == list(range(6))
    for s, item in zip(steps, loader, strict=True):
        assert s["compute_s"] >= 0.005
        assert s["loss"] == 0.5
        assert s["inputs"] == item[0].shape[0] and s["remote"] == _n_remote(item[0])
        assert s["epoch"] == 0
        assert min(s[k] for k in ("sample_s", "pull_s", "hook_s", "wait_s")) >= 0.0
    time_s = feats.summary()["time_s"]
    assert time_s["compute_s"] == pytest.approx(sum(s["compute_s"] for s in steps))
    assert time_s["compute_s"] >= 6 * 0.005
    feats.close()


def test_prepare_runs_on_each_batch(store, rng):
    loader = _loader(rng, 5)
    feats = _feats(store, policy="lru", buffer_fraction=0.2)

    def prepare(b):
        b.extra = int(b.item[0].sum())

    got = [(b.extra, b.prepare_s) for b in feats.batches(loader, prepare=prepare, depth=2)]
    assert [e for e, _ in got] == [int(it[0].sum()) for it in loader]
    assert all(p >= 0.0 for _, p in got)
    feats.close()


# -- files and the recorded trace --------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.04, 0.2, 0.5])
def test_close_writes_results_metrics_steps_and_a_replayable_trace(fraction, store, rng, tmp_path):
    feats = _feats(
        store,
        policy="rudder",
        decider="heuristic",
        buffer_fraction=fraction,
        out_dir=str(tmp_path),
        record_trace=True,
        epochs=2,
        batch_size=4,
        fanouts=(5, 10),
    )
    loaders = [_loader(rng, 15), _loader(rng, 15)]
    for loader in loaders:
        for _ in feats.prefetch(loader):
            time.sleep(0.001)
    result = feats.close()
    n = sum(len(ld) for ld in loaders)

    rank_json = tmp_path / "trainers" / "rank-0.json"
    steps_file = tmp_path / "trainers" / "steps-rank-0.jsonl"
    metrics_file = tmp_path / "trainers" / "metrics-rank-0.jsonl"
    trace_file = tmp_path / "trace" / "rank-0.npz"
    for p in (rank_json, steps_file, metrics_file, trace_file):
        assert p.is_file(), p
    assert result["totals"]["minibatches"] == n
    assert len(steps_file.read_text().splitlines()) == n

    metrics = read_metrics_trace(metrics_file)
    assert [m.minibatch for m in metrics] == list(range(n))
    assert [m.epoch for m in metrics] == [0] * 15 + [1] * 15
    assert sum(m.hits for m in metrics) == result["totals"]["hits"]

    trace = load_trace(trace_file)
    assert trace.num_minibatches == n
    assert trace.meta.remote_node_count == REMOTE and trace.meta.feat_dim == F
    assert trace.meta.fanouts == (5, 10) and trace.meta.batch_size == 4
    assert trace.meta.epochs == 2
    for t, ids in enumerate(it[0] for ld in loaders for it in ld):
        remote = ids[(ids < LO) | (ids >= HI)].numpy()
        assert np.array_equal(trace.batch(t), np.sort(remote))
        assert trace.local_counts[t] == ids.shape[0] - remote.shape[0]
    assert (trace.compute_s > 0).all()

    replayed = []
    r = replay(
        trace,
        "rudder",
        ReplayConfig(buffer_fraction=fraction, decider="heuristic"),
        on_metrics=replayed.append,
    )
    assert r.capacity == result["capacity"]
    assert [m.hits for m in replayed] == [m.hits for m in metrics]
    assert [m.rows_fetched for m in replayed] == [m.rows_fetched for m in metrics]
    assert r.totals.hits == result["totals"]["hits"]
    assert r.totals.rows_fetched == result["totals"]["rows_fetched"]


def test_without_out_dir_nothing_is_written(store, rng, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    feats = _feats(store, policy="rudder", buffer_fraction=0.2, record_trace=True)
    for _ in feats.prefetch(_loader(rng, 3)):
        pass
    result = feats.close()
    assert result["totals"]["minibatches"] == 3
    assert list(tmp_path.iterdir()) == []


# -- verification, deciders, life cycle --------------------------------------------------------


def test_verify_features_checks_every_minibatch(store, rng):
    feats = _feats(store, policy="rudder", buffer_fraction=0.3, verify_features=True)
    for _ in feats.prefetch(_loader(rng, 10)):
        pass
    v = feats.summary()["verification"]
    assert v["minibatches"] == 10
    assert v["mismatches"] == 0
    assert v["hits_checked"] == feats.summary()["totals"]["hits"] > 0
    assert _feats(store).summary()["verification"] is None


def test_a_decider_object_runs_in_process(store, rng):
    decider = EveryThird()
    feats = BufferedFeatures(
        store.__getitem__,
        _facts(),
        RudderConfig(policy="rudder", decider="llm", buffer_fraction=0.2),
        decider=decider,
    )
    for ids in _input_nodes(rng, 12):
        assert torch.equal(feats[ids], store[ids])
    # latency 1: every minibatch's metrics are asked about, in order
    assert decider.seen == list(range(12))
    s = feats.summary()
    # first() at 0, then an answer lands at every minibatch after it
    assert s["decisions"] == 12
    assert s["replace_decisions"] == 1 + sum((t + 1) % 3 == 0 for t in range(11))
    feats.close()


@pytest.mark.parametrize(("policy", "rule"), [("static", "never"), ("fixed", "always")])
def test_a_decider_object_does_not_replace_a_baselines_rule(policy, rule, store, rng):
    """A baseline is its rule (static never replaces, fixed always does), as in replay."""
    decider = EveryThird()
    feats = BufferedFeatures(
        store.__getitem__,
        _facts(),
        RudderConfig(policy=policy, buffer_fraction=0.2),
        decider=decider,
    )
    for ids in _input_nodes(rng, 9):
        feats[ids]
    s = feats.summary()
    assert s["decider"] == rule
    assert s["replace_decisions"] == (9 if rule == "always" else 0)
    assert decider.seen == []


@pytest.mark.parametrize("decider", ["llm", "classifier:/tmp/model.pkl"])
def test_agent_deciders_need_a_sidecar_endpoint(decider, store):
    with pytest.raises(ValueError, match=r"sidecar.*endpoint|endpoint.*sidecar"):
        _feats(store, policy="rudder", decider=decider)


def test_agent_decider_names_are_ignored_by_other_policies(store, rng):
    feats = _feats(store, policy="lru", decider="llm", buffer_fraction=0.2)
    ids = _input_nodes(rng, 1)[0]
    assert torch.equal(feats[ids], store[ids])
    assert feats.summary()["decider"] is None


def test_close_twice_and_fetch_after_close(store, rng, tmp_path):
    feats = _feats(store, policy="rudder", buffer_fraction=0.2, out_dir=str(tmp_path))
    ids = _input_nodes(rng, 1)[0]
    feats[ids]
    first = feats.close()
    second = feats.close()
    assert first["totals"] == second["totals"]
    assert (tmp_path / "trainers" / "rank-0.json").is_file()
    with pytest.raises(RuntimeError, match="closed"):
        feats.fetch(ids)
    with pytest.raises(RuntimeError, match="closed"):
        feats[ids]


def test_context_manager_closes(store, rng, tmp_path):
    ids = _input_nodes(rng, 1)[0]
    with _feats(store, policy="rudder", out_dir=str(tmp_path)) as feats:
        feats[ids]
    assert (tmp_path / "trainers" / "rank-0.json").is_file()
    with pytest.raises(RuntimeError):
        feats[ids]


def test_trainer_info_describes_the_partition(store):
    feats = BufferedFeatures(
        store.__getitem__,
        _facts(graph="g", num_nodes=N, num_edges=3 * N, num_parts=2, part_id=1),
        RudderConfig(policy="rudder", buffer_fraction=0.2, epochs=3, batch_size=16),
    )
    feats.plan_run(10)
    info = feats.trainer_info()
    assert info.local_nodes == HI - LO and info.remote_nodes == REMOTE
    assert info.buffer_capacity == round(0.2 * REMOTE)
    assert info.minibatches_per_epoch == 10 and info.total_minibatches == 30
    assert info.part_id == 1 and info.num_parts == 2 and info.batch_size == 16
