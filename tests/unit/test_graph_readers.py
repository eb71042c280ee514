"""Readers on small fabricated files in OGB's and SNAP's layouts."""

import gzip

import numpy as np
import pytest

from rudder.graphs import readers
from rudder.graphs.readers import DatasetMissingError, SnapSpec, import_ogb, import_snap
from rudder.graphs.store import load_graph

# A 6-node graph given with a duplicate, a reversed duplicate and a self loop.
EDGES = [(0, 1), (1, 0), (0, 1), (1, 2), (2, 2), (3, 4), (4, 5), (5, 0)]
NEIGHBOURS = {0: [1, 5], 1: [0, 2], 2: [1], 3: [4], 4: [3, 5], 5: [0, 4]}
N, F = 6, 3
FEAT = np.arange(N * F, dtype=np.float32).reshape(N, F) / 7
LABELS = [3.0, 1.0, float("nan"), 0.0, 2.0, 1.0]  # node 2 unlabelled
SPLIT = {"train": [0, 1, 2], "valid": [3], "test": [4, 5]}


def write_gz(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write("".join(f"{line}\n" for line in lines))


def write_split(base, name):
    for part, ids in SPLIT.items():
        write_gz(base / "split" / name / f"{part}.csv.gz", ids)


def assert_neighbours(data):
    for u, nbrs in NEIGHBOURS.items():
        assert data.indices[data.indptr[u] : data.indptr[u + 1]].tolist() == nbrs


def assert_labels_and_masks(data):
    assert data.label.tolist() == [3, 1, 0, 0, 2, 1]
    assert np.flatnonzero(data.train_mask).tolist() == [0, 1]  # unlabelled node 2 dropped
    assert np.flatnonzero(data.val_mask).tolist() == [3]
    assert np.flatnonzero(data.test_mask).tolist() == [4, 5]
    assert data.extra["unlabeled_nodes"] == 1


@pytest.fixture
def arxiv_root(tmp_path):
    base = tmp_path / "ogbn_arxiv"
    raw = base / "raw"
    write_gz(raw / "edge.csv.gz", [f"{u},{v}" for u, v in EDGES])
    write_gz(raw / "num-node-list.csv.gz", [N])
    write_gz(raw / "num-edge-list.csv.gz", [len(EDGES)])
    write_gz(raw / "node-feat.csv.gz", [",".join(f"{x!r}" for x in row) for row in FEAT.tolist()])
    write_gz(raw / "node-label.csv.gz", ["nan" if np.isnan(y) else int(y) for y in LABELS])
    write_split(base, "time")
    return tmp_path


def test_ogb_csv_layout(arxiv_root, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CSV_ROWS", 4)  # several pandas chunks
    data = import_ogb("ogbn-arxiv", arxiv_root, tmp_path / "out")
    assert data.num_nodes == N and data.num_edges == 2 * 5 and data.source == "ogb"
    assert_neighbours(data)
    assert np.array_equal(data.feat, FEAT)
    assert_labels_and_masks(data)
    assert load_graph(tmp_path / "out").name == "ogbn-arxiv"


def test_ogb_root_may_be_the_dataset_directory(arxiv_root, tmp_path):
    data = import_ogb("ogbn-arxiv", arxiv_root / "ogbn_arxiv", tmp_path / "out")
    assert data.num_nodes == N


def test_ogb_binary_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_NPZ_BLOCK_BYTES", 40)  # blocks straddle src and dst
    base = tmp_path / "ogbn_papers100M"
    (base / "raw").mkdir(parents=True)
    np.savez_compressed(
        base / "raw" / "data.npz",
        edge_index=np.asarray(EDGES, dtype=np.int64).T.copy(),
        node_feat=FEAT.astype(np.float16),
        num_nodes_list=np.asarray([N]),
        num_edges_list=np.asarray([len(EDGES)]),
    )
    np.savez(base / "raw" / "node-label.npz", node_label=np.asarray(LABELS)[:, None])
    write_split(base, "time")
    data = import_ogb("ogbn-papers100M", tmp_path, tmp_path / "out")
    assert_neighbours(data)
    assert np.array_equal(data.feat, FEAT.astype(np.float16).astype(np.float32))
    assert_labels_and_masks(data)


def test_ogb_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        import_ogb("ogbn-products", tmp_path, tmp_path / "out")
    msg = str(e.value)
    assert str(tmp_path / "ogbn_products" / "raw" / "num-node-list.csv.gz") in msg
    assert "https://ogb.stanford.edu" in msg and "products.zip" in msg
    assert str(tmp_path / "ogbn_products" / "raw" / "edge.csv.gz") in msg
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_ogb_unknown_name():
    with pytest.raises(ValueError, match="ogbn-arxiv"):
        import_ogb("ogbn-nope", "/nonexistent", "/nonexistent/out")


SNAP_EDGES = """# Undirected graph: com-toy.ungraph.txt
# FromNodeId\tToNodeId
10\t20
20 10
20\t35
35\t35
40  50
50\t77
77\t10
"""
# SNAP ids 10, 20, 35, 40, 50, 77 -> 0..5: the same graph as EDGES.


@pytest.mark.parametrize("gz", [False, True])
def test_snap_edge_list_is_relabelled(tmp_path, gz):
    path = tmp_path / ("toy.ungraph.txt" + (".gz" if gz else ""))
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(SNAP_EDGES)
    else:
        path.write_text(SNAP_EDGES)
    spec = SnapSpec(edges=path, feat_dim=4, classes=3, seed=1, train_fraction=0.5)
    data = import_snap(spec, tmp_path / "out")
    assert data.name == "toy" and data.source == "snap"
    assert_neighbours(data)
    assert np.load(tmp_path / "out" / "orig_ids.npy").tolist() == [10, 20, 35, 40, 50, 77]
    # Degree buckets: 3 equal buckets by degree, ties by id.
    assert data.label.tolist() == [1, 1, 0, 0, 2, 2]
    assert data.feat.shape == (6, 4) and data.train_mask.sum() == 3


def test_snap_communities_label_nodes(tmp_path):
    (tmp_path / "e.txt").write_text(SNAP_EDGES)
    # Largest first: {10, 20, 35} is class 0, {40, 50} class 1; 77 falls back to its bucket.
    (tmp_path / "c.txt").write_text("40\t50\n10\t20\t35\n50\n")
    spec = SnapSpec(edges=tmp_path / "e.txt", communities=tmp_path / "c.txt", classes=2)
    data = import_snap(spec, tmp_path / "out")
    assert data.label[:5].tolist() == [0, 0, 0, 1, 1]
    assert data.extra["communities_used"] == 2 and data.extra["nodes_in_communities"] == 5


def test_snap_missing_file(tmp_path):
    with pytest.raises(DatasetMissingError, match=r"nope\.txt is missing"):
        import_snap(SnapSpec(edges=tmp_path / "nope.txt"), tmp_path / "out")
