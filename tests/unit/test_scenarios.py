"""Workload scenarios: the ring family, node times, random partitions, ordered minibatches."""

import json
from pathlib import Path

import numpy as np
import pytest

from rudder.cli.main import main
from rudder.graphs.features import DatasetSpec, generate_dataset, write_dataset
from rudder.graphs.store import load_graph
from rudder.graphs.synth_traces import (
    EVAL,
    TRAIN,
    SynthSpec,
    _shares,
    layout,
    relabel,
    schedule,
    synthesize,
    total_minibatches,
)
from rudder.graphs.synthetic import GraphSpec, generate, node_times
from rudder.trainer_hooks.policies.registry import PolicySpec
from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay
from rudder.trainer_hooks.trace import load_trace

FIXTURES = Path(__file__).parents[1] / "fixtures" / "scenarios"
RING = GraphSpec(
    nodes=10_000, avg_degree=15, communities=8, family="ring", locality_scale=100, seed=1
)


@pytest.fixture(scope="module")
def ring():
    return generate(RING)


def spec(**kw) -> SynthSpec:
    base = {
        "graph": RING,
        "parts": 2,
        "epochs": 3,
        "batch_size": 50,
        "train_fraction": 0.3,
        "partition": "random",
    }
    return SynthSpec(**{**base, **kw})


def overlap(trace, lag: int) -> float:
    """Mean share of a minibatch's remote ids that the minibatch ``lag`` later requests too."""
    sets = [set(trace.batch(i).tolist()) for i in range(trace.num_minibatches)]
    return float(
        np.mean(
            [len(sets[i] & sets[i + lag]) / max(1, len(sets[i])) for i in range(len(sets) - lag)]
        )
    )


def ring_distance(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    d = np.abs(a - b)
    return np.minimum(d, n - d)


# ---------------------------------------------------------------------------------------------
# Graphs


def test_ring_edges_are_local_and_degrees_heavy_tailed(ring):
    n = ring.num_nodes
    src = np.repeat(np.arange(n), ring.degrees())
    dst = ring.indices
    assert np.all(src != dst)
    keys = src * n + dst
    assert np.unique(keys).shape[0] == keys.shape[0]
    assert np.array_equal(np.sort(keys), np.sort(dst * n + src))  # undirected
    dist = ring_distance(src, dst, n)
    assert np.median(dist) < (n / 4) / 10  # a uniform graph's median would be n / 4
    assert np.median(dist) < 3 * RING.locality_scale
    deg = ring.degrees()
    assert abs(deg.mean() - RING.avg_degree) < 0.5
    assert deg.max() > 5 * deg.mean()  # power-law sources: a heavy tail
    # community = position bucket
    assert np.array_equal(ring.community, np.arange(n) * RING.communities // n)


def test_ring_is_seeded_and_families_differ():
    small = GraphSpec(nodes=3000, avg_degree=8, family="ring", seed=4)
    a, b = generate(small), generate(small)
    assert np.array_equal(a.indices, b.indices)
    dcsbm = generate(GraphSpec(nodes=3000, avg_degree=8, seed=4))
    assert not np.array_equal(a.indptr, dcsbm.indptr)


def test_default_family_is_the_old_generator():
    # The pinned hash of test_graph_synthetic covers the default family; "dcsbm" is the default.
    spec = GraphSpec(nodes=3000, avg_degree=10, communities=12, mixing=0.1, seed=5)
    explicit = GraphSpec(
        nodes=3000, avg_degree=10, communities=12, mixing=0.1, seed=5, family="dcsbm"
    )
    assert spec == explicit
    a, b = generate(spec), generate(explicit)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.community, b.community)
    assert spec.label == "synthetic-n3000-d10-s5"


@pytest.mark.parametrize(
    "kw", [{"family": "grid"}, {"family": "ring", "locality_scale": 0.0}], ids=str
)
def test_graph_spec_explains_bad_values(kw):
    with pytest.raises(ValueError, match=r"family|locality_scale"):
        GraphSpec(nodes=100, **kw)


def test_node_times_follow_the_ring_and_are_uniform_otherwise():
    t = node_times(RING)
    assert t.dtype == np.float32 and t.shape == (RING.nodes,)
    assert t.min() >= 0 and t.max() < 1
    pos = np.arange(RING.nodes) / RING.nodes
    assert np.median(ring_distance(t, pos, 1.0)) < 2 * RING.locality_scale / RING.nodes
    u = node_times(GraphSpec(nodes=20_000, seed=3))
    assert u.min() >= 0 and u.max() < 1
    assert abs(np.histogram(u, bins=4, range=(0, 1))[0] / 5000 - 1).max() < 0.1
    assert np.array_equal(u, node_times(GraphSpec(nodes=20_000, seed=3)))


def test_generated_datasets_store_node_times_and_old_graphs_have_none(tmp_path):
    ds = DatasetSpec(graph=GraphSpec(nodes=2000, avg_degree=8, family="ring", seed=2), classes=4)
    data = generate_dataset(ds)
    assert np.array_equal(data.time, node_times(ds.graph))
    written = write_dataset(ds, tmp_path / "g")
    assert np.array_equal(written.time, data.time)
    assert np.array_equal(written.indices, data.indices)
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["extra"]["generator"] == "ring" and meta["name"].startswith("synthetic-ring-")
    (tmp_path / "g" / "time.npy").unlink()  # a graph written before node times existed
    assert load_graph(tmp_path / "g").time is None


# ---------------------------------------------------------------------------------------------
# Default traces and partitions


def test_default_traces_are_unchanged():
    """The stationary scenario records exactly what synthesize() did before scenarios."""
    old = SynthSpec(
        graph=GraphSpec(nodes=5000, avg_degree=10.0, communities=16, seed=3),
        parts=2,
        trainers_per_part=2,
        epochs=2,
        batch_size=64,
        seed=5,
    )
    traces = synthesize(old)
    with np.load(FIXTURES / "stationary-small.npz") as z:
        for i, tr in enumerate(traces):
            for key, got in (
                ("offsets", tr.offsets),
                ("ids", tr.ids),
                ("epochs", tr.epochs),
                ("local_counts", tr.local_counts),
                ("prefill", tr.prefill_ranking),
            ):
                want = z[f"{key}_{i}"]
                assert got.dtype == want.dtype and np.array_equal(got, want), (key, i)
    assert traces[0].meta.extra == {"train_nodes": 131, "mixing": 0.2, "communities": 16}
    assert all(getattr(tr, "phase", None) is None for tr in traces)  # no new arrays either


def test_random_partition_splits_communities_into_ranges(ring):
    s = spec()
    lay = layout(s, ring)
    assert np.array_equal(lay.partition.bounds, [0, RING.nodes // 2, RING.nodes])
    assert np.array_equal(np.sort(lay.position), np.arange(RING.nodes))
    owner = lay.partition.part_of(np.arange(RING.nodes))
    for c in range(RING.communities):
        assert np.unique(owner[lay.community == c]).shape[0] == 2  # in both parts
    # The relabelled graph is the same graph: map its edges back to generator ids.
    g = relabel(ring, lay.position)
    src = np.repeat(np.arange(RING.nodes), g.degrees())
    back = np.sort(lay.position[src] * RING.nodes + lay.position[g.indices])
    src0 = np.repeat(np.arange(RING.nodes), ring.degrees())
    assert np.array_equal(back, np.sort(src0 * RING.nodes + ring.indices))
    assert np.array_equal(g.community, lay.community)


def test_random_partition_traces_hold_remote_ids_only(ring):
    traces = synthesize(spec(epochs=1), ring)
    lay = layout(spec(), ring)
    for tr in traces:
        assert np.all(lay.partition.part_of(tr.ids) != tr.meta.part_id)
        assert np.all(lay.partition.part_of(tr.prefill_ranking) != tr.meta.part_id)
        assert tr.meta.extra["partition"] == "random" and tr.meta.extra["family"] == "ring"
        assert tr.meta.graph.startswith("synthetic-ring-")


# ---------------------------------------------------------------------------------------------
# Scenarios


def test_locality_ordering_makes_access_drift_and_shuffling_does_not(ring):
    loc = synthesize(spec(scenario="locality"), ring)[0]
    sta = synthesize(spec(scenario="stationary"), ring)[0]
    assert loc.num_minibatches == sta.num_minibatches
    near, far = overlap(loc, 1), overlap(loc, 10)
    assert near > 3 * far
    near_s, far_s = overlap(sta, 1), overlap(sta, 10)
    assert abs(near_s - far_s) < 0.1 * near_s
    assert loc.meta.extra["scenario"] == "locality"
    assert loc.meta.extra["locality_order"] == "sweep"


def test_a_sweep_visits_every_node_once_per_epoch_in_ring_order(ring):
    s = spec(scenario="locality")
    lay = layout(s, ring)
    _, _, shares = _shares(s, lay, 0)
    mine, evals = next(shares)
    batches = schedule(s, lay, 0, mine, evals)
    starts = []
    for epoch in range(s.epochs):
        seeds = np.concatenate([b for e, _, b in batches if e == epoch])
        assert np.array_equal(np.sort(seeds), mine)
        pos = lay.position[seeds]
        assert np.sum(np.diff(pos) < 0) <= 1  # increasing, wrapping around once
        starts.append(pos[0])
    assert len(set(starts)) == s.epochs  # a new start every epoch


def test_phases_visit_communities_one_at_a_time(ring):
    s = spec(scenario="locality", locality_order="phases")
    lay = layout(s, ring)
    _, _, shares = _shares(s, lay, 0)
    mine, evals = next(shares)
    batches = schedule(s, lay, 0, mine, evals)
    orders = []
    for epoch in range(s.epochs):
        seeds = np.concatenate([b for e, _, b in batches if e == epoch])
        assert np.array_equal(np.sort(seeds), mine)
        comm = lay.community[seeds]
        runs = comm[np.r_[True, comm[1:] != comm[:-1]]]
        assert np.unique(runs).shape[0] == runs.shape[0]  # each community in one run
        orders.append(tuple(runs))
    assert len(set(orders)) > 1  # community order changes between epochs
    tr = synthesize(s, ring)[0]
    assert overlap(tr, 1) > 2 * overlap(tr, 10)


@pytest.mark.parametrize("every", [1, 2, 3])
def test_eval_passes_come_every_k_epochs_and_are_marked(ring, every):
    s = spec(scenario="eval", epochs=5, eval_every=every)
    traces = synthesize(s, ring)
    tr = traces[0]
    marked = np.zeros(tr.num_minibatches, dtype=bool)
    marked[tr.meta.extra["eval_minibatches"]] = True
    eval_epochs = np.unique(tr.epochs[marked])
    assert eval_epochs.tolist() == [e for e in range(5) if (e + 1) % every == 0]
    for e in range(5):
        in_epoch = np.flatnonzero(tr.epochs == e)
        m = marked[in_epoch]
        # Training first, then (on eval epochs) the evaluation pass at the epoch's end.
        assert not np.any(m[:-1] & ~m[1:])
    phase = getattr(tr, "phase", None)
    if hasattr(tr, "phase"):  # the trace format carries the phase array
        assert phase is not None and np.array_equal(phase == EVAL, marked)
    assert tr.meta.extra["eval_every"] == every
    assert tr.meta.extra["eval_batch_size"] == 4 * s.batch_size
    # Evaluation nodes are held out from training and sized by eval_fraction.
    lay = layout(s, ring)
    train, evals, shares = _shares(s, lay, 0)
    assert np.intersect1d(train, evals).shape[0] == 0
    assert evals.shape[0] == round(s.eval_fraction * lay.partition.size(0))
    mine, my_eval = next(shares)
    batches = schedule(s, lay, 0, mine, my_eval)
    eval_seeds = [b for _, p, b in batches if p == EVAL]
    assert max(b.shape[0] for b in eval_seeds) == s.eval_batch
    per_pass = -(-my_eval.shape[0] // s.eval_batch)
    assert np.concatenate(eval_seeds[:per_pass]).tolist() == my_eval.tolist()
    # Forward only: an evaluation minibatch is modelled cheaper per input than training.
    inputs = tr.local_counts + np.diff(tr.offsets)
    assert np.all(tr.compute_s[marked] < 1.5e-6 * inputs[marked] * 0.5)


def test_temporal_windows_slide(ring):
    s = spec(scenario="temporal", epochs=5, window=0.3, window_step=0.1)
    lay = layout(s, ring)
    _, _, shares = _shares(s, lay, 0)
    mine, evals = next(shares)
    batches = schedule(s, lay, 0, mine, evals)
    angles = []
    for epoch in range(s.epochs):
        seeds = np.concatenate([b for e, p, b in batches if e == epoch and p == TRAIN])
        t = lay.time[seeds]
        assert np.all(np.mod(t - epoch * s.window_step, 1.0) < s.window)
        # The seeds are the whole window: every training node whose time is inside.
        inside = np.mod(lay.time[mine] - epoch * s.window_step, 1.0) < s.window
        assert np.array_equal(np.sort(seeds), mine[inside])
        pos = lay.position[seeds] / RING.nodes
        angles.append(np.angle(np.mean(np.exp(2j * np.pi * pos))) / (2 * np.pi))
    shifts = np.mod(np.diff(angles), 1.0)
    assert np.all(np.abs(shifts - s.window_step) < 0.02)  # the mean position moves with e
    tr = synthesize(s, ring)[0]
    assert tr.meta.extra["window"] == 0.3 and tr.meta.extra["scenario"] == "temporal"


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scenario": "locality"},
        {"scenario": "locality", "locality_order": "phases"},
        {"scenario": "eval", "eval_batch_size": 70},
        {"scenario": "temporal"},
        {"scenario": "stationary", "partition": "community", "trainers_per_part": 2},
    ],
    ids=str,
)
def test_total_minibatches_counts_what_synthesize_records(ring, kw):
    s = spec(epochs=2, **kw)
    assert total_minibatches(s, ring) == sum(t.num_minibatches for t in synthesize(s, ring))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scenario": "weekly"}, "unknown scenario"),
        ({"partition": "metis"}, "unknown partition"),
        ({"locality_order": "zigzag"}, "unknown locality_order"),
        ({"eval_every": 0}, "eval_every"),
        ({"eval_fraction": 0.0}, "eval_fraction"),
        ({"window": 0.0}, "window must"),
        ({"window_step": 1.5}, "window_step"),
        ({"scenario": "eval", "train_fraction": 1.0}, "held-out"),
    ],
    ids=str,
)
def test_synth_spec_explains_bad_scenarios(kw, match):
    with pytest.raises(ValueError, match=match):
        SynthSpec(**kw)


def test_locality_leaves_room_for_timing_that_shuffling_does_not(ring):
    """Best fixed buffer vs Belady's MIN, 25% buffer: drift makes the gap, shuffling does not."""
    config = ReplayConfig(buffer_fraction=0.25)
    specs = [PolicySpec.parse(p) for p in ("best-static", "belady")]

    def gap(tr) -> float:
        ctx = context_for(tr, specs)
        static = replay(tr, specs[0], config, ctx).totals.rows_fetched
        return static / replay(tr, specs[1], config, ctx).totals.rows_fetched

    loc = gap(synthesize(spec(scenario="locality"), ring)[0])
    sta = gap(synthesize(spec(scenario="stationary"), ring)[0])
    assert loc >= 1.3
    assert sta < loc


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_records_the_scenario(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["-q", "trace", "synth", "--out", out, "--nodes", 4000, "--avg-degree", 8]
    args += ["--family", "ring", "--locality-scale", 50, "--partition", "random"]
    args += ["--scenario", "eval", "--eval-every", 1, "--epochs", 2, "--batch-size", 50]
    assert main([str(a) for a in args]) == 0
    tr = load_trace(out / "rank-0.npz")
    extra = tr.meta.extra
    assert extra["scenario"] == "eval" and extra["eval_every"] == 1
    assert extra["family"] == "ring" and extra["locality_scale"] == 50.0
    assert sorted(set(tr.epochs[extra["eval_minibatches"]].tolist())) == [0, 1]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--window", "0.5"], "--window applies to --scenario temporal"),
        (["--scenario", "locality", "--eval-every", "3"], "--eval-every applies"),
        (["--locality-scale", "50"], "--locality-scale applies to --family ring"),
    ],
)
def test_cli_refuses_knobs_of_another_scenario(tmp_path, capsys, bad, message):
    rc = main(["trace", "synth", "--out", str(tmp_path / "t"), "--nodes", "2000", *bad])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_choices_are_the_library_s():
    from rudder.cli import graph_cmd, trace_cmd
    from rudder.graphs import synth_traces, synthetic

    assert graph_cmd.FAMILIES == synthetic.FAMILIES
    assert trace_cmd.SCENARIOS == synth_traces.SCENARIOS
    assert trace_cmd.PARTITIONS == synth_traces.PARTITIONS
    assert trace_cmd.LOCALITY_ORDERS == synth_traces.LOCALITY_ORDERS


def test_graph_generate_makes_rings(tmp_path):
    out = tmp_path / "g"
    args = ["-q", "graph", "generate", "--out", str(out), "--nodes", "3000", "--classes", "4"]
    assert main([*args, "--family", "ring", "--locality-scale", "40"]) == 0
    data = load_graph(out)
    assert data.time is not None and data.extra["graph_spec"]["family"] == "ring"
    assert np.array_equal(
        data.indices, generate(GraphSpec(nodes=3000, family="ring", locality_scale=40.0)).indices
    )
