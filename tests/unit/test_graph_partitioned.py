"""The partition sidecar's loader and the k-hop reach, without DGL."""

import json
from collections import deque

import numpy as np
import pytest

from rudder.graphs import partitioned
from rudder.graphs.partitioned import (
    PartitionFormatError,
    PartitionInfo,
    PartitionSet,
    load_partitions,
    within_hops,
)
from rudder.graphs.synthetic import GraphSpec, generate


def bfs_within(graph, seeds, hops):
    dist = {int(s): 0 for s in seeds}
    queue = deque(dist)
    while queue:
        u = queue.popleft()
        if dist[u] == hops:
            continue
        for v in graph.indices[graph.indptr[u] : graph.indptr[u + 1]]:
            if int(v) not in dist:
                dist[int(v)] = dist[u] + 1
                queue.append(int(v))
    return sorted(dist)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_within_hops_matches_bfs(monkeypatch, rng, hops):
    monkeypatch.setattr(partitioned, "_GATHER_EDGES", 64)  # many gather blocks
    g = generate(GraphSpec(nodes=600, avg_degree=3, communities=6, seed=4))
    seeds = rng.choice(600, 10, replace=False)
    got = np.flatnonzero(within_hops(g.indptr, g.indices, seeds, hops))
    assert got.tolist() == bfs_within(g, seeds, hops)


def fake_partitions(root, ranking=(7, 5, 6)):
    """A sidecar as `rudder graph partition` writes it, for a 10-node graph in 2 parts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy.json").write_text("{}")
    (root / "part0").mkdir(exist_ok=True)
    np.save(root / "part0" / "remote_ranking.npy", np.asarray(ranking, dtype=np.int64))
    parts = (
        PartitionInfo(0, (0, 4), 4, 2, len(ranking), "part0/remote_ranking.npy"),
        PartitionInfo(1, (4, 10), 6, 1, 0, "part1/remote_ranking.npy"),
    )
    pset = PartitionSet(
        root=root,
        graph="toy",
        config=root / "toy.json",
        num_parts=2,
        method="metis",
        hops=2,
        num_nodes=10,
        num_edges=30,
        feat_dim=8,
        num_classes=3,
        partitions=parts,
    )
    (root / "rudder.json").write_text(json.dumps(pset.to_json()))
    return pset


def test_sidecar_round_trip(tmp_path):
    written = fake_partitions(tmp_path / "p")
    pset = load_partitions(tmp_path / "p")
    assert pset == written
    assert pset.config.is_absolute() and pset.config.name == "toy.json"
    assert load_partitions(tmp_path / "p" / "rudder.json") == pset
    assert pset.remote_ranking(0).tolist() == [7, 5, 6]
    assert pset.part_of(np.array([0, 3, 4, 9])).tolist() == [0, 0, 1, 1]
    with pytest.raises(PartitionFormatError, match=r"remote_ranking\.npy: missing"):
        pset.remote_ranking(1)
    with pytest.raises(ValueError, match="part must lie in"):
        pset.remote_ranking(2)


def test_missing_directory_says_what_to_run(tmp_path):
    with pytest.raises(PartitionFormatError, match=r"no such partition directory.*rudder graph"):
        load_partitions(tmp_path / "nope")


def test_distdgl_partitions_without_sidecar(tmp_path):
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(PartitionFormatError, match="not written by `rudder graph partition`"):
        load_partitions(tmp_path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(version=2), "version 2"),
        (lambda m: m.update(format="other"), "not written by `rudder graph partition`"),
        (lambda m: m.pop("hops"), "malformed"),
        (lambda m: m["partitions"][1].update(node_range=[5, 10]), "node_range"),
        (lambda m: m.update(config="gone.json"), "partition config is missing"),
    ],
)
def test_bad_sidecars_are_explained(tmp_path, edit, match):
    fake_partitions(tmp_path)
    meta = json.loads((tmp_path / "rudder.json").read_text())
    edit(meta)
    (tmp_path / "rudder.json").write_text(json.dumps(meta))
    with pytest.raises(PartitionFormatError, match=match):
        load_partitions(tmp_path)


def test_corrupt_sidecar(tmp_path):
    fake_partitions(tmp_path)
    (tmp_path / "rudder.json").write_text("{not json")
    with pytest.raises(PartitionFormatError, match="corrupt"):
        load_partitions(tmp_path)


def test_wrong_ranking_file_is_refused(tmp_path):
    pset = fake_partitions(tmp_path)
    np.save(tmp_path / "part0" / "remote_ranking.npy", np.arange(3, dtype=np.int32))
    with pytest.raises(PartitionFormatError, match="expected int64"):
        pset.remote_ranking(0)
