"""`rudder graph partition` for real: DistDGL partitions plus Rudder's sidecar."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rudder.graphs.features import DatasetSpec, generate_dataset
from rudder.graphs.partitioned import load_partitions, partition, within_hops
from rudder.graphs.store import load_graph, save_graph
from rudder.graphs.synthetic import GraphSpec

pytestmark = pytest.mark.integration

SPEC = DatasetSpec(
    graph=GraphSpec(nodes=3000, avg_degree=10, communities=12, mixing=0.1, seed=5),
    feat_dim=8,
    classes=4,
    name="toy",
)


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    save_graph(generate_dataset(SPEC), out)
    return out


@pytest.fixture(scope="module", params=["metis", "random"])
def parted(request, graph_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"parts-{request.param}")
    data = load_graph(graph_dir)
    return data, partition(data, out, parts=2, method=request.param, hops=2)


def test_sidecar_describes_the_partitions(parted):
    data, pset = parted
    meta = json.loads((pset.root / "rudder.json").read_text())
    assert meta["format"] == "rudder-partitions" and meta["version"] == 1
    assert meta["graph"] == "toy" and meta["config"] == "toy.json"
    assert (meta["num_parts"], meta["hops"]) == (2, 2)
    assert (meta["num_nodes"], meta["num_edges"]) == (data.num_nodes, data.num_edges)
    assert (meta["feat_dim"], meta["num_classes"]) == (8, 4)
    assert load_partitions(pset.root) == pset
    assert pset.config.is_file() and pset.config.is_absolute()
    assert sum(p.local_nodes for p in pset.partitions) == data.num_nodes
    assert sum(p.train_nodes for p in pset.partitions) == int(data.train_mask.sum())


def test_rankings_hold_reachable_remote_nodes_by_degree(parted):
    data, pset = parted
    orig = pset.orig_nids()
    assert np.array_equal(np.sort(orig), np.arange(data.num_nodes))
    degree_new = data.degrees()[orig]
    for p in pset.partitions:
        a, b = p.node_range
        ranking = pset.remote_ranking(p.part)
        assert ranking.shape[0] == p.remote_node_count > 0
        assert np.unique(ranking).shape[0] == ranking.shape[0]
        assert np.all((ranking < a) | (ranking >= b))  # owned by another partition
        assert np.all(pset.part_of(ranking) != p.part)
        seeds = orig[a:b][data.train_mask[orig[a:b]]]
        reach = within_hops(data.indptr, data.indices, seeds, 2)
        assert np.all(reach[orig[ranking]])  # within 2 hops of the partition's train nodes
        expected_count = int(reach.sum() - reach[orig[a:b]].sum())
        assert p.remote_node_count == expected_count  # and every such node is listed
        assert np.all(np.diff(degree_new[ranking]) <= 0)  # by degree, highest first


def test_partition_features_are_the_original_rows(parted):
    import dgl

    data, pset = parted
    orig = pset.orig_nids()
    for p in pset.partitions:
        a, b = p.node_range
        _, node_feats, *_ = dgl.distributed.load_partition(str(pset.config), p.part)
        assert np.array_equal(node_feats["_N/feat"].numpy(), data.feat[orig[a:b]])
        assert np.array_equal(node_feats["_N/label"].numpy(), data.label[orig[a:b]])
        assert np.array_equal(node_feats["_N/train_mask"].numpy(), data.train_mask[orig[a:b]])


def rudder(*args):
    return subprocess.run(
        [sys.executable, "-m", "rudder", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_generate_partition_info(tmp_path):
    g, p = tmp_path / "g", tmp_path / "p"
    gen = rudder(
        "-q",
        "graph",
        "generate",
        "--nodes",
        2000,
        "--communities",
        8,
        "--classes",
        4,
        "--feat-dim",
        4,
        "--out",
        g,
    )
    assert gen.returncode == 0, gen.stderr
    assert "2,000 nodes" in gen.stdout
    part = rudder("-q", "graph", "partition", "--graph", g, "--parts", 2, "--out", p)
    assert part.returncode == 0, part.stderr
    assert "remote_reachable" in part.stdout
    info = json.loads(rudder("graph", "info", p, "--json").stdout)
    assert info["num_parts"] == 2 and info["method"] == "metis"


def test_cli_partition_of_a_missing_graph_is_a_clear_error(tmp_path):
    proc = rudder(
        "graph", "partition", "--graph", tmp_path / "nope", "--parts", 2, "--out", tmp_path / "p"
    )
    assert proc.returncode == 2
    assert "rudder graph: error:" in proc.stderr
    assert "not a Rudder graph directory" in proc.stderr and "rudder graph generate" in proc.stderr
    assert "Traceback" not in proc.stderr
