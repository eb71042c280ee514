"""Node arrival times travel into DistDGL's partitions as ``ndata["time"]``."""

import numpy as np
import pytest

from rudder.graphs.features import DatasetSpec, generate_dataset
from rudder.graphs.partitioned import partition
from rudder.graphs.store import load_graph, save_graph
from rudder.graphs.synthetic import GraphSpec

pytestmark = pytest.mark.integration

SPEC = DatasetSpec(
    graph=GraphSpec(nodes=3000, avg_degree=8, communities=8, family="ring", seed=5),
    feat_dim=4,
    classes=4,
    name="ring-toy",
)


def test_partitions_carry_node_times(tmp_path):
    import dgl

    save_graph(generate_dataset(SPEC), tmp_path / "g")
    data = load_graph(tmp_path / "g")
    assert data.time is not None
    pset = partition(data, tmp_path / "p", parts=2, method="random", hops=2)
    orig = pset.orig_nids()
    for p in pset.partitions:
        a, b = p.node_range
        _, node_feats, *_ = dgl.distributed.load_partition(str(pset.config), p.part)
        assert np.array_equal(node_feats["_N/time"].numpy(), data.time[orig[a:b]])


def test_graphs_without_times_partition_as_before(tmp_path):
    import dgl

    save_graph(generate_dataset(SPEC), tmp_path / "g")
    (tmp_path / "g" / "time.npy").unlink()
    data = load_graph(tmp_path / "g")
    pset = partition(data, tmp_path / "p", parts=2, method="random", hops=2)
    _, node_feats, *_ = dgl.distributed.load_partition(str(pset.config), 0)
    assert "_N/time" not in node_feats and "_N/feat" in node_feats
