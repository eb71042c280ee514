import numpy as np
import pytest

from rudder.graphs.partition import community_partition
from rudder.graphs.sampling import NeighborSampler
from rudder.graphs.synth_traces import SynthSpec, synthesize, total_minibatches
from rudder.graphs.synthetic import GraphSpec, generate

SMALL = GraphSpec(nodes=3000, avg_degree=10, communities=12, mixing=0.1, seed=5)


@pytest.fixture(scope="module")
def graph():
    return generate(SMALL)


def test_generator_is_seeded(graph):
    again = generate(SMALL)
    assert np.array_equal(graph.indptr, again.indptr)
    assert np.array_equal(graph.indices, again.indices)
    other = generate(GraphSpec(nodes=3000, avg_degree=10, communities=12, mixing=0.1, seed=6))
    assert not np.array_equal(graph.indices, other.indices)


def test_generated_graph_is_simple_undirected_and_heavy_tailed(graph):
    n = graph.num_nodes
    src = np.repeat(np.arange(n), graph.degrees())
    dst = graph.indices
    assert np.all(src != dst)
    keys = src * n + dst
    assert np.unique(keys).shape[0] == keys.shape[0]
    assert np.array_equal(np.sort(keys), np.sort(dst * n + src))  # every edge both ways
    deg = graph.degrees()
    assert abs(deg.mean() - SMALL.avg_degree) < 0.5
    assert deg.max() > 5 * deg.mean()  # a power-law tail, not a Poisson bump
    intra = np.mean(graph.community[src] == graph.community[dst])
    assert intra > 0.85  # mixing 0.1


def test_partition_is_balanced_contiguous_and_local(graph):
    part = community_partition(graph, 3)
    assert part.bounds[0] == 0 and part.bounds[-1] == graph.num_nodes
    sizes = np.diff(part.bounds)
    assert sizes.min() > 0.6 * sizes.max()
    src = np.repeat(np.arange(graph.num_nodes), graph.degrees())
    same = part.part_of(src) == part.part_of(graph.indices)
    assert same.mean() > 0.85
    # Cuts fall on community boundaries: no community is split.
    for c in np.unique(graph.community):
        assert np.unique(part.part_of(np.flatnonzero(graph.community == c))).shape[0] == 1


def test_sampler_samples_neighbours_within_fanout(graph):
    seeds = np.arange(0, 3000, 97)
    s = NeighborSampler(graph, (3, 4), seed=1)
    inputs = s.input_nodes(seeds)
    assert np.all(np.isin(seeds, inputs))
    one_hop = np.unique(graph.neighbors_of(seeds))
    two_hop = np.unique(graph.neighbors_of(np.union1d(seeds, one_hop)))
    assert np.all(np.isin(inputs, np.union1d(np.union1d(seeds, one_hop), two_hop)))
    assert inputs.shape[0] <= seeds.shape[0] * (1 + 4) * (1 + 3)
    again = NeighborSampler(graph, (3, 4), seed=1).input_nodes(seeds)
    assert np.array_equal(inputs, again)


def test_synthesize_is_deterministic_and_only_records_remote_ids(graph):
    spec = SynthSpec(
        graph=SMALL,
        parts=2,
        trainers_per_part=2,
        epochs=2,
        batch_size=64,
        train_fraction=0.2,
        seed=3,
    )
    a = synthesize(spec, graph)
    b = synthesize(spec, graph)
    assert len(a) == 4 and [t.meta.trainer for t in a] == [0, 1, 2, 3]
    assert sum(t.num_minibatches for t in a) == total_minibatches(spec, graph)
    part = community_partition(graph, 2)
    deg = graph.degrees()
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.offsets, y.offsets)
        assert not np.any(part.owns(x.meta.part_id, x.ids))
        assert x.distinct_ids() <= x.meta.remote_node_count == x.prefill_ranking.shape[0]
        assert np.all(np.isin(x.ids, x.prefill_ranking))  # reachable set covers every access
        assert np.all(np.diff(deg[x.prefill_ranking]) <= 0)  # by decreasing degree
        assert x.meta.timings == "modelled" and np.all(x.fetch_s > 0)


def test_specs_explain_bad_values():
    with pytest.raises(ValueError, match="at least 2 parts"):
        SynthSpec(parts=1)
    with pytest.raises(ValueError, match="mixing"):
        GraphSpec(mixing=2.0)
