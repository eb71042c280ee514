import json
import zipfile

import numpy as np
import pytest
from conftest import make_meta, make_trace

from rudder.trainer_hooks.trace import AccessTrace, TraceError, find_traces, load_trace


def _sample_trace():
    batches = [[5, 1, 2**40], [], [3], [], [7, 8, 9, 2**62], []]
    return AccessTrace.build(
        make_meta(remote_node_count=40),
        batches,
        local_counts=np.array([10, 0, 3, 4, 5, 6]),
        epochs=np.array([0, 0, 0, 1, 1, 1]),
        sample_s=np.linspace(0.1, 0.6, 6),
        fetch_s=np.full(6, 0.01),
        compute_s=np.full(6, 0.2),
        prefill_ranking=np.array([9, 8, 7]),
    )


def test_round_trip(tmp_path):
    tr = _sample_trace()
    path = tr.save(tmp_path / "rank-0")
    assert path.name == "rank-0.npz"
    back = load_trace(path)
    assert back.meta == tr.meta
    for name in (
        "offsets",
        "ids",
        "local_counts",
        "epochs",
        "sample_s",
        "fetch_s",
        "compute_s",
        "prefill_ranking",
    ):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    assert [b.tolist() for b in back] == [[1, 5, 2**40], [], [3], [], [7, 8, 9, 2**62], []]
    assert back.ids.dtype == np.int64


def test_compact_on_disk(tmp_path, rng):
    batches = [np.sort(rng.choice(10**6, 5000, replace=False)) for _ in range(20)]
    path = make_trace(batches, ranking=np.empty(0, np.int64)).save(tmp_path / "t")
    assert path.stat().st_size / 100_000 < 3.0  # bytes per id, int64 ids delta-encoded


def test_truncated_file_is_a_clear_error(tmp_path):
    path = _sample_trace().save(tmp_path / "t")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="truncated or corrupt"):
        load_trace(path)


def _rewrite_header(path, mutate):  # a file written by a different Rudder
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    mutate(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def test_wrong_version_names_both_versions(tmp_path):
    path = _sample_trace().save(tmp_path / "t")
    _rewrite_header(path, lambda h: h.update(version=99))
    with pytest.raises(TraceError, match="version 99; this Rudder reads version 1"):
        load_trace(path)


def test_other_npz_files_are_rejected(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(TraceError, match="no header"):
        load_trace(path)
    with zipfile.ZipFile(tmp_path / "y.npz", "w") as z:
        z.writestr("junk.txt", "hello")
    with pytest.raises(TraceError):
        load_trace(tmp_path / "y.npz")


def test_unsorted_or_duplicate_ids_are_rejected(tmp_path):
    path = _sample_trace().save(tmp_path / "t")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["id_deltas"][1] = 0  # minibatch 0 now repeats an id
    np.savez_compressed(path, **arrays)
    with pytest.raises(TraceError, match="sorted and unique"):
        load_trace(path)


def test_find_traces(tmp_path):
    with pytest.raises(TraceError, match="no such"):
        find_traces(tmp_path / "nope")
    with pytest.raises(TraceError, match="holds no"):
        find_traces(tmp_path)
    _sample_trace().save(tmp_path / "rank-1")
    _sample_trace().save(tmp_path / "rank-0")
    assert [p.name for p in find_traces(tmp_path)] == ["rank-0.npz", "rank-1.npz"]


def test_capacity_is_a_fraction_of_reachable_remote_nodes():
    meta = make_meta(remote_node_count=1000)
    assert meta.capacity(0.05) == 50 and meta.capacity(0.25) == 250
    with pytest.raises(ValueError, match="fraction"):
        meta.capacity(1.5)
