"""Generated datasets: labels follow communities, features carry labels, splits, writing."""

import json

import numpy as np
import pytest

from rudder.graphs.features import (
    DatasetSpec,
    NpyWriter,
    begin_graph_dir,
    class_centroids,
    feature_blocks,
    generate_dataset,
    random_split,
    write_dataset,
)
from rudder.graphs.store import GraphFormatError, load_graph
from rudder.graphs.synthetic import GraphSpec

SPEC = DatasetSpec(
    graph=GraphSpec(nodes=4000, avg_degree=12, communities=24, mixing=0.1, seed=7),
    feat_dim=32,
    classes=6,
)
ARRAYS = ("indptr", "indices", "feat", "label", "train_mask", "val_mask", "test_mask", "community")


@pytest.fixture(scope="module")
def data():
    return generate_dataset(SPEC)


def test_labels_follow_communities_and_use_every_class(data):
    assert data.num_classes == SPEC.classes
    assert np.array_equal(np.unique(data.label), np.arange(SPEC.classes))
    for c in np.unique(data.community):
        assert np.unique(data.label[data.community == c]).shape[0] == 1


def test_features_carry_the_labels_and_neighbours_help(data):
    centroids = class_centroids(SPEC.classes, SPEC.feat_dim, SPEC.graph.seed)

    def accuracy(x):
        d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
        return float((d.argmin(1) == data.label).mean())

    src = np.repeat(np.arange(data.num_nodes), data.degrees())
    mean = np.zeros_like(data.feat)
    np.add.at(mean, src, data.feat[data.indices])
    mean = (mean + data.feat) / (data.degrees()[:, None] + 1)
    alone, with_neighbours = accuracy(data.feat), accuracy(mean)
    chance = 1 / SPEC.classes
    assert alone > 1.5 * chance
    assert with_neighbours > alone + 0.2
    assert data.feat.dtype == np.float32 and data.feat.shape == (4000, 32)


def test_masks_are_disjoint_with_the_requested_sizes(data):
    m = np.stack([data.train_mask, data.val_mask, data.test_mask])
    assert m.sum(0).max() == 1
    assert m.sum(1).tolist() == [400, 200, 400]


def test_random_split_respects_the_eligible_pool():
    pool = np.zeros(100, dtype=bool)
    pool[::2] = True
    train, val, test = random_split(100, 0.5, 0.2, 0.3, seed=1, eligible=pool)
    assert not np.any((train | val | test) & ~pool)
    assert (train.sum(), val.sum(), test.sum()) == (25, 10, 15)
    again = random_split(100, 0.5, 0.2, 0.3, seed=1, eligible=pool)
    assert np.array_equal(train, again[0])


def test_features_do_not_depend_on_the_block_size():
    label = np.arange(37) % 3
    centroids = class_centroids(3, 5, seed=0)
    whole = np.concatenate([r.copy() for _, r in feature_blocks(label, centroids, 1.0, 9, 1000)])
    small = np.concatenate([r.copy() for _, r in feature_blocks(label, centroids, 1.0, 9, 4)])
    assert np.array_equal(whole, small)


def test_write_dataset_equals_generate_dataset(data, tmp_path):
    calls = []
    written = write_dataset(SPEC, tmp_path / "g", on_progress=lambda *a: calls.append(a))
    for key in ARRAYS:
        assert np.array_equal(getattr(written, key), getattr(data, key)), key
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["extra"]["graph_spec"]["nodes"] == 4000 and meta["num_classes"] == 6
    assert load_graph(tmp_path / "g").name == SPEC.dataset_name
    assert {c[0] for c in calls} == {"edges", "features"}


def test_begin_graph_dir_removes_only_a_previous_graph(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "community.npy").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    begin_graph_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_npy_writer_checks_row_counts_and_cleans_up(tmp_path):
    with NpyWriter(tmp_path / "a.npy", (3, 2), np.float32) as w:
        w.write(np.ones((2, 2)))
        w.write(np.zeros((1, 2)))
    assert np.load(tmp_path / "a.npy").tolist() == [[1, 1], [1, 1], [0, 0]]
    with (
        pytest.raises(GraphFormatError, match="2 of 3 rows"),
        NpyWriter(tmp_path / "b.npy", (3, 2), np.float32) as w,
    ):
        w.write(np.ones((2, 2)))
    with (
        pytest.raises(GraphFormatError, match="does not fit"),
        NpyWriter(tmp_path / "c.npy", (3, 2), np.float32) as w,
    ):
        w.write(np.ones((4, 2)))
    assert not (tmp_path / "c.npy").exists()


def test_specs_explain_bad_values():
    with pytest.raises(ValueError, match="classes must lie in"):
        DatasetSpec(graph=GraphSpec(communities=4), classes=8)
    with pytest.raises(ValueError, match="exceed 1"):
        DatasetSpec(train_fraction=0.6, val_fraction=0.3, test_fraction=0.2)
    with pytest.raises(ValueError, match="train fraction must be > 0"):
        DatasetSpec(train_fraction=0.0)
