"""What the buffer learns from a DistGraph: owned range, halo fallback, sidecar, rank."""

import numpy as np
import pytest
import torch

from rudder.trainer_hooks.distdgl.config import PartInfo
from rudder.trainer_hooks.distdgl.facts import graph_facts, halo_ranking, owned_range, trainer_rank
from tests.configs import worker_config


class FakeBook:
    """DistDGL's partition book: this trainer's partition and the ids each one owns."""

    def __init__(self, nids, partid=0, num_parts=2):
        self.partid = partid
        self._nids = torch.as_tensor(nids, dtype=torch.int64)
        self._num_parts = num_parts

    def partid2nids(self, partid):
        assert partid == self.partid
        return self._nids

    def num_partitions(self):
        return self._num_parts


class FakeLocal:
    """The partition's local graph: inner and halo nodes, their global ids, in-degrees."""

    def __init__(self, inner, global_ids, degrees):
        self.ndata = {
            "inner_node": torch.as_tensor(inner, dtype=torch.int32),
            "_ID": torch.as_tensor(global_ids, dtype=torch.int64),
        }
        self._degrees = torch.as_tensor(degrees, dtype=torch.int64)

    def in_degrees(self, ids):
        return self._degrees[ids]


class FakeDistGraph:
    def __init__(self, book, local=None, name="tiny"):
        self._book = book
        self.local_partition = local
        self.graph_name = name
        self.ndata = {}

    def get_partition_book(self):
        return self._book

    def num_nodes(self):
        return 100

    def num_edges(self):
        return 640


# Local nodes 0..5: 0..2 are inner (global 10..12), 3..7 are halo nodes from other partitions.
INNER = [1, 1, 1, 0, 0, 0, 0, 0]
GLOBAL = [10, 11, 12, 40, 3, 77, 25, 60]
DEGREE = [9, 9, 9, 2, 5, 2, 7, 5]
# halo by decreasing degree, ties by global id: 25 (7), 3 (5), 60 (5), 40 (2), 77 (2)
HALO_ORDER = [25, 3, 60, 40, 77]


def _graph(partid=0):
    return FakeDistGraph(
        FakeBook(np.arange(10, 13), partid=partid), FakeLocal(INNER, GLOBAL, DEGREE)
    )


# -- owned_range -------------------------------------------------------------------------------


def test_owned_range_is_the_contiguous_block():
    assert owned_range(FakeBook(np.arange(250, 400))) == (250, 400)
    assert owned_range(FakeBook([7])) == (7, 8)


def test_owned_range_of_an_empty_partition():
    assert owned_range(FakeBook(np.array([], dtype=np.int64))) == (0, 0)


@pytest.mark.parametrize("nids", [[0, 1, 3], [5, 7, 9], [2, 3, 4, 10]])
def test_owned_range_rejects_non_contiguous_ids(nids):
    with pytest.raises(ValueError, match="contiguous"):
        owned_range(FakeBook(nids))


# -- halo fallback -----------------------------------------------------------------------------


def test_halo_ranking_orders_by_degree_then_id():
    count, ranking = halo_ranking(_graph())
    assert count == 5
    assert ranking.dtype == np.int64
    assert ranking.tolist() == HALO_ORDER


def test_halo_ranking_without_halo_nodes():
    g = FakeDistGraph(FakeBook([0, 1]), FakeLocal([1, 1], [0, 1], [3, 4]))
    count, ranking = halo_ranking(g)
    assert count == 0 and ranking.shape == (0,)


def test_graph_facts_fall_back_to_the_halo(tmp_path):
    # DGL's own partition_graph output: a partition config with no rudder.json beside it.
    (tmp_path / "tiny.json").write_text("{}")
    env = {"DGL_CONF_PATH": str(tmp_path / "tiny.json")}
    facts = graph_facts(_graph(partid=1), feat_dim=16, environ=env)
    assert facts.owned == (10, 13)
    assert facts.remote_nodes == 5
    assert facts.prefill_ranking.tolist() == HALO_ORDER
    assert facts.feat_dim == 16
    assert facts.graph == "tiny" and facts.num_nodes == 100 and facts.num_edges == 640
    assert facts.num_parts == 2 and facts.part_id == 1
    assert facts.minibatches_per_epoch == 0


def test_graph_facts_with_no_partition_config_at_all():
    facts = graph_facts(_graph(), feat_dim=4, environ={})
    assert facts.remote_nodes == 5 and facts.prefill_ranking.tolist() == HALO_ORDER


def test_graph_facts_from_the_run_config(tmp_path):
    rankings = []
    for p in range(2):
        path = tmp_path / f"ranking-{p}.npy"
        np.save(path, np.array([90 + p, 80, 70], dtype=np.int64))
        rankings.append(str(path))
    parts = tuple(PartInfo(p, (p * 10, p * 10 + 10), 3 + p, rankings[p]) for p in range(2))
    run = tmp_path / "run.json"
    worker_config(str(tmp_path), parts=parts, graph_name="tiny", num_nodes=100, num_edges=640).save(
        run
    )
    # The sidecar's numbers, not the halo's (the fake local partition would say 5).
    facts = graph_facts(_graph(partid=1), feat_dim=4, environ={"RUDDER_RUN_CONFIG": str(run)})
    assert facts.remote_nodes == 4
    assert facts.prefill_ranking.tolist() == [91, 80, 70]
    assert facts.owned == (10, 13)


# -- trainer_rank ------------------------------------------------------------------------------


def test_trainer_rank_from_the_environment():
    assert trainer_rank({"RUDDER_RANK": "3"}) == 3
    assert trainer_rank({"RUDDER_RANK": "0"}) == 0


def test_trainer_rank_defaults_to_zero_without_torch_distributed():
    assert not torch.distributed.is_initialized()
    assert trainer_rank({}) == 0
    assert trainer_rank({"RUDDER_RANK": ""}) == 0


def test_a_bad_rank_is_an_error():
    with pytest.raises(ValueError, match="x"):
        trainer_rank({"RUDDER_RANK": "x"})
