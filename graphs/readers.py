"""Readers for datasets users already have on disk: OGB node-property sets and SNAP graphs.

Nothing is downloaded: a missing file is a :class:`DatasetMissingError` naming the file and
where to put it. Every reader writes a graph directory (graphs/store.py's layout) and streams
the large arrays, so memory stays near the edge list's size.

Conventions, the same for every reader:

- Edges become undirected: both directions stored, duplicates and self loops dropped.
- Unlabelled nodes (OGB's NaN labels, e.g. most of ogbn-papers100M) get label 0 and are in no
  mask; ``extra["unlabeled_nodes"]`` counts them.
- SNAP ids are relabelled to ``0..N-1`` in increasing order of the original id;
  ``orig_ids.npy`` keeps each node's SNAP id.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import zipfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rudder.graphs.features import (
    NpyWriter,
    begin_graph_dir,
    class_centroids,
    degree_classes,
    random_split,
    seal_graph_dir,
    write_features,
)
from rudder.graphs.store import GraphData, GraphFormatError
from rudder.graphs.synthetic import Progress, csr_from_keys, sorted_unique

log = logging.getLogger(__name__)

_CSV_ROWS = 1 << 20  # rows per pandas chunk
_NPZ_BLOCK_BYTES = 64 << 20  # bytes per block when streaming an array out of an .npz

OGB_URL = "http://snap.stanford.edu/ogb/data/nodeproppred/{}.zip"


class DatasetMissingError(FileNotFoundError):
    """A dataset file is not where the reader looks; the message says how to provide it."""


class DatasetFormatError(GraphFormatError):
    """A dataset file exists but does not hold what its layout promises."""


# ---------------------------------------------------------------------------------------------
# Edge lists to CSR.


class UndirectedEdges:
    """Collects edges block by block; :meth:`csr` returns the simple undirected graph.

    Each edge is kept as one ``min * N + max`` key (8 bytes; self loops dropped on the way),
    so a dataset's edge list never needs two int64 columns plus their reverse in memory.
    """

    def __init__(self, num_nodes: int, capacity: int = 0):
        if num_nodes >= 3_037_000_499:  # keys must fit int64: N^2 < 2^63
            raise ValueError(f"{num_nodes} nodes is beyond what the edge keys can hold")
        self.num_nodes = int(num_nodes)
        self._keys = np.empty(max(capacity, 1024), dtype=np.int64)
        self._size = 0

    def add(self, src: np.ndarray, dst: np.ndarray) -> None:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if src.shape != dst.shape:
            raise ValueError(f"src and dst differ in length: {src.shape} vs {dst.shape}")
        if src.size and (
            min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= self.num_nodes
        ):
            raise DatasetFormatError(f"edge endpoint outside [0, {self.num_nodes})")
        keep = src != dst
        u = np.minimum(src[keep], dst[keep])
        v = np.maximum(src[keep], dst[keep])
        need = self._size + u.shape[0]
        if need > self._keys.shape[0]:
            grown = np.empty(max(need, 2 * self._keys.shape[0]), dtype=np.int64)
            grown[: self._size] = self._keys[: self._size]
            self._keys = grown
        np.multiply(u, self.num_nodes, out=self._keys[self._size : need])
        self._keys[self._size : need] += v
        self._size = need

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of the undirected simple graph; the collector is emptied."""
        keys = sorted_unique(self._keys[: self._size])
        self._keys, self._size = np.empty(0, dtype=np.int64), 0
        return csr_from_keys(keys, self.num_nodes)


def _save_csr(out: Path, edges: UndirectedEdges) -> int:
    indptr, indices = edges.csr()
    np.save(out / "indptr.npy", indptr)
    np.save(out / "indices.npy", indices)
    log.info("%d nodes, %d undirected edges", indptr.shape[0] - 1, indices.shape[0] // 2)
    return int(indices.shape[0])


def _degrees(out: Path) -> np.ndarray:
    return np.diff(np.load(out / "indptr.npy", mmap_mode="r"))


# ---------------------------------------------------------------------------------------------
# OGB.


@dataclass(frozen=True, slots=True)
class OgbDataset:
    """What the reader needs to know about one OGB node-property dataset."""

    name: str
    download_name: str
    split: str
    binary: bool  # raw/data.npz + raw/node-label.npz instead of CSV files

    @property
    def dir_name(self) -> str:
        return self.name.replace("-", "_")


OGB_DATASETS = {
    d.name: d
    for d in (
        OgbDataset("ogbn-arxiv", "arxiv", "time", binary=False),
        OgbDataset("ogbn-products", "products", "sales_ranking", binary=False),
        OgbDataset("ogbn-papers100M", "papers100M-bin", "time", binary=True),
    )
}


def ogb_dir(name: str, root: str | Path) -> Path:
    """The dataset's directory: ``root/<name with _>``, or ``root`` itself if it has raw/."""
    ds = _ogb_dataset(name)
    root = Path(root)
    inner = root / ds.dir_name
    if not (inner / "raw").is_dir() and (root / "raw").is_dir():
        return root
    return inner


def import_ogb(
    name: str, root: str | Path, out: str | Path, on_progress: Progress | None = None
) -> GraphData:
    """Read OGB dataset ``name`` from its unpacked raw layout under ``root`` into ``out``."""
    ds = _ogb_dataset(name)
    base = ogb_dir(name, root)
    raw = base / "raw"
    split = base / "split" / ds.split
    if ds.binary:
        needed = [raw / "data.npz", raw / "node-label.npz"]
    else:
        needed = [raw / f for f in ("num-node-list.csv.gz", "edge.csv.gz", "node-feat.csv.gz")]
        needed.append(raw / "node-label.csv.gz")
    needed += [split / f"{s}.csv.gz" for s in ("train", "valid", "test")]
    for f in needed:
        if not f.is_file():
            raise DatasetMissingError(_ogb_missing(ds, Path(root), f))

    out = begin_graph_dir(out)
    if ds.binary:
        n, directed = _ogb_binary_structure_and_features(raw, out, on_progress)
        y = _npz_array(raw / "node-label.npz", "node_label").reshape(-1).astype(np.float64)
    else:
        n, directed = _ogb_csv_structure_and_features(raw, out, on_progress)
        y = _read_csv(raw / "node-label.csv.gz", np.float64).reshape(-1)
    if y.shape[0] != n:
        raise DatasetFormatError(f"{name}: {y.shape[0]} labels for {n} nodes")
    labeled = ~np.isnan(y)
    label = np.where(labeled, y, 0).astype(np.int64)
    np.save(out / "label.npy", label)
    for key, part in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
        ids = _read_csv(split / f"{part}.csv.gz", np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise DatasetFormatError(f"{split / part}.csv.gz: node id outside [0, {n})")
        mask = np.zeros(n, dtype=np.bool_)
        mask[ids] = True
        np.save(out / f"{key}.npy", mask & labeled)
    extra = {
        "dataset": ds.name,
        "split": ds.split,
        "input_edges": directed,
        "unlabeled_nodes": int(n - labeled.sum()),
        "label_convention": "unlabeled nodes have label 0 and are in no mask",
    }
    return seal_graph_dir(out, name=ds.name, source="ogb", extra=extra)


def _ogb_dataset(name: str) -> OgbDataset:
    if name not in OGB_DATASETS:
        raise ValueError(f"unknown OGB dataset {name!r}; choose from {', '.join(OGB_DATASETS)}")
    return OGB_DATASETS[name]


def _ogb_missing(ds: OgbDataset, root: Path, missing: Path) -> str:
    url = OGB_URL.format(ds.download_name)
    first = "data.npz" if ds.binary else "edge.csv.gz"
    return (
        f"{missing} is missing. Download {ds.name} from https://ogb.stanford.edu ({url}), "
        f"unzip it in {root} and rename {root / ds.download_name} to {root / ds.dir_name} "
        f"(or let the `ogb` package fetch it with root={root}), so that "
        f"{root / ds.dir_name / 'raw' / first} and "
        f"{root / ds.dir_name / 'split' / ds.split / 'train.csv.gz'} exist"
    )


def _ogb_csv_structure_and_features(
    raw: Path, out: Path, on_progress: Progress | None
) -> tuple[int, int]:
    n = int(_read_csv(raw / "num-node-list.csv.gz", np.int64).reshape(-1).sum())
    counts = raw / "num-edge-list.csv.gz"  # optional: sizes the buffer and the progress bar
    e = int(_read_csv(counts, np.int64).reshape(-1).sum()) if counts.is_file() else 0
    edges = UndirectedEdges(n, capacity=e)
    directed = 0
    for block in _csv_blocks(raw / "edge.csv.gz", np.int64, 2):
        edges.add(block[:, 0], block[:, 1])
        directed += block.shape[0]
        if on_progress is not None:
            on_progress("edges", directed, e)
    _save_csr(out, edges)
    del edges
    blocks = _csv_blocks(raw / "node-feat.csv.gz", np.float32)
    first = next(blocks, None)
    if first is None:
        raise DatasetFormatError(f"{raw / 'node-feat.csv.gz'}: empty")
    with NpyWriter(out / "feat.npy", (n, first.shape[1]), np.float32) as w:
        for block in itertools.chain([first], blocks):
            w.write(block)
            if on_progress is not None:
                on_progress("features", w.rows, n)
    return n, directed


def _ogb_binary_structure_and_features(
    raw: Path, out: Path, on_progress: Progress | None
) -> tuple[int, int]:
    data = raw / "data.npz"
    n = int(_npz_array(data, "num_nodes_list").sum())
    with _npz_member(data, "edge_index") as (shape, blocks):
        if len(shape) != 2 or shape[0] != 2:
            raise DatasetFormatError(f"{data}: edge_index has shape {shape}, expected (2, E)")
        e = shape[1]
        # edge_index is row-major: all sources, then all destinations. Keep the sources, pair
        # each block of destinations with them.
        src = np.empty(e, dtype=np.int64)
        edges = UndirectedEdges(n, capacity=e)
        pos = 0  # flat position in edge_index
        for block in blocks:
            if pos < e:
                k = min(block.shape[0], e - pos)
                src[pos : pos + k] = block[:k]
                block, pos = block[k:], pos + k
            if block.shape[0]:
                a = pos - e
                edges.add(src[a : a + block.shape[0]], block)
                pos += block.shape[0]
            if on_progress is not None:
                on_progress("edges", pos, 2 * e)
    del src
    _save_csr(out, edges)
    del edges
    with _npz_member(data, "node_feat") as (shape, blocks):
        if len(shape) != 2 or shape[0] != n:
            raise DatasetFormatError(f"{data}: node_feat has shape {shape}, expected ({n}, F)")
        with NpyWriter(out / "feat.npy", shape, np.float32) as w:
            for block in blocks:
                w.write(block.reshape(-1, shape[1]))
                if on_progress is not None:
                    on_progress("features", w.rows, n)
    return n, e


def _read_csv(path: Path, dtype) -> np.ndarray:
    blocks = list(_csv_blocks(path, dtype))
    return np.concatenate(blocks) if blocks else np.empty((0, 1), dtype=dtype)


def _csv_blocks(path: Path, dtype, columns: int | None = None) -> Iterator[np.ndarray]:
    """Row blocks of a headerless CSV file (gzip by extension) as 2-D arrays of ``dtype``."""
    import pandas as pd

    try:
        reader = pd.read_csv(path, header=None, dtype=dtype, chunksize=_CSV_ROWS)
        with reader:
            for frame in reader:
                block = frame.to_numpy(dtype=dtype)
                if columns is not None and block.shape[1] != columns:
                    raise DatasetFormatError(
                        f"{path}: {block.shape[1]} columns, expected {columns}"
                    )
                yield block
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: unreadable: {e}") from None


def _npz_array(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except KeyError:
        raise DatasetFormatError(f"{path}: no array {key!r}") from None


@contextlib.contextmanager
def _npz_member(path: Path, key: str) -> Iterator[tuple[tuple[int, ...], Iterator[np.ndarray]]]:
    """The shape of array ``key`` in ``path`` and its flat elements in blocks (row-major).

    Reads the zip member as a stream, so a 50 GB feature matrix never sits in memory.
    """
    with zipfile.ZipFile(path) as zf:
        member = f"{key}.npy"
        if member not in zf.namelist():
            raise DatasetFormatError(f"{path}: no array {key!r}")
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if fortran and len(shape) > 1:
                raise DatasetFormatError(f"{path}: {key} is Fortran-ordered; expected C order")
            yield tuple(shape), _stream_blocks(f, shape, dtype, f"{path}: {key}")


def _stream_blocks(f, shape: tuple[int, ...], dtype: np.dtype, what: str) -> Iterator[np.ndarray]:
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    per_block = max(row, _NPZ_BLOCK_BYTES // dtype.itemsize // row * row)
    total = int(np.prod(shape))
    done = 0
    while done < total:
        want = min(per_block, total - done)
        buf = f.read(want * dtype.itemsize)
        if len(buf) != want * dtype.itemsize:
            raise DatasetFormatError(f"{what} is truncated")
        yield np.frombuffer(buf, dtype=dtype)
        done += want


# ---------------------------------------------------------------------------------------------
# SNAP.


@dataclass(kw_only=True, slots=True, frozen=True)
class SnapSpec:
    """How to turn a SNAP edge list into a node-classification dataset."""

    edges: Path
    communities: Path | None = None
    feat_dim: int = 100
    classes: int = 16
    feat_noise: float = 1.0
    train_fraction: float = 0.1
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    seed: int = 0
    name: str = ""  # default: the edge file's name up to the first dot, e.g. "com-orkut"

    def __post_init__(self) -> None:
        if self.feat_dim < 1:
            raise ValueError(f"feat_dim must be >= 1, got {self.feat_dim}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if self.feat_noise < 0:
            raise ValueError(f"feat_noise must be >= 0, got {self.feat_noise}")

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.edges).name.split(".")[0]


def import_snap(spec: SnapSpec, out: str | Path, on_progress: Progress | None = None) -> GraphData:
    """Read a SNAP edge list (and optionally its community file) into graph directory ``out``.

    Labels: with a community file, the ``classes`` largest communities are the classes (the
    largest is class 0); a node in several takes the largest one's; nodes in none take a
    degree bucket (``classes`` equal-size buckets, low degree first). Without one, every node
    takes its degree bucket. Features carry the labels as in ``rudder graph generate``.
    """
    for f in (spec.edges, spec.communities):
        if f is not None and not Path(f).is_file():
            raise DatasetMissingError(
                f"{f} is missing. Download it from https://snap.stanford.edu/data/ (e.g. "
                "com-orkut.ungraph.txt.gz, com-orkut.top5000.cmty.txt.gz) and pass its path"
            )
    from rudder.graphs.features import check_fractions

    check_fractions(spec.train_fraction, spec.val_fraction, spec.test_fraction)
    out = begin_graph_dir(out)
    # Pass 1 finds the ids in use; pass 2 relabels them to 0..N-1 and builds the edge keys.
    present = np.zeros(0, dtype=np.bool_)
    lines = 0
    for block in _snap_blocks(spec.edges):
        top = int(block.max()) + 1 if block.size else 0
        if block.size and block.min() < 0:
            raise DatasetFormatError(f"{spec.edges}: negative node id")
        if top > present.shape[0]:  # grow geometrically: ids mostly rise through the file
            grown = np.zeros(max(top, 2 * present.shape[0]), dtype=np.bool_)
            grown[: present.shape[0]] = present
            present = grown
        present[block.reshape(-1)] = True
        lines += block.shape[0]
        if on_progress is not None:
            on_progress("scan ids", lines, 0)
    orig_ids = np.flatnonzero(present)
    n = int(orig_ids.shape[0])
    if n < 2:
        raise DatasetFormatError(f"{spec.edges}: fewer than 2 nodes")
    remap = np.full(present.shape[0], -1, dtype=np.int64)
    remap[orig_ids] = np.arange(n, dtype=np.int64)
    del present
    edges = UndirectedEdges(n, capacity=lines)
    done = 0
    for block in _snap_blocks(spec.edges):
        edges.add(remap[block[:, 0]], remap[block[:, 1]])
        done += block.shape[0]
        if on_progress is not None:
            on_progress("edges", done, lines)
    _save_csr(out, edges)
    del edges
    np.save(out / "orig_ids.npy", orig_ids)

    degree = _degrees(out)
    label = degree_classes(degree, spec.classes)
    extra = {"edge_file": str(spec.edges), "input_edges": lines}
    if spec.communities is not None:
        member, used = _community_labels(spec.communities, spec.classes, remap, n)
        label = np.where(member >= 0, member, label)
        extra["community_file"] = str(spec.communities)
        extra["communities_used"] = used
        extra["nodes_in_communities"] = int((member >= 0).sum())
    np.save(out / "label.npy", label)
    masks = random_split(n, spec.train_fraction, spec.val_fraction, spec.test_fraction, spec.seed)
    for key, m in zip(("train_mask", "val_mask", "test_mask"), masks, strict=True):
        np.save(out / f"{key}.npy", m)
    centroids = class_centroids(spec.classes, spec.feat_dim, spec.seed)
    write_features(out / "feat.npy", label, centroids, spec.feat_noise, spec.seed, on_progress)
    extra.update(
        classes=spec.classes,
        feat_noise=spec.feat_noise,
        seed=spec.seed,
        fractions=[spec.train_fraction, spec.val_fraction, spec.test_fraction],
        label_convention="top communities by size, then degree buckets",
    )
    return seal_graph_dir(out, name=spec.dataset_name, source="snap", extra=extra)


def _snap_blocks(path: Path) -> Iterator[np.ndarray]:
    """``int64[k, 2]`` blocks of a SNAP edge list ('#' comments, whitespace-separated)."""
    import pandas as pd

    try:
        reader = pd.read_csv(
            path,
            sep=r"\s+",
            comment="#",
            header=None,
            usecols=[0, 1],
            dtype=np.int64,
            chunksize=_CSV_ROWS,
        )
        with reader:
            for frame in reader:
                yield frame.to_numpy(dtype=np.int64)
    except pd.errors.EmptyDataError:
        return
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFormatError(f"{path}: not a SNAP edge list: {e}") from None


def _open_text(path: Path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt")
    return open(path)


def _community_labels(
    path: Path, classes: int, remap: np.ndarray, n: int
) -> tuple[np.ndarray, int]:
    """Class of each node from its largest community among the ``classes`` largest, else -1."""
    sizes = array("q")
    with _open_text(path) as f:
        for line in f:
            sizes.append(0 if line.startswith("#") else len(line.split()))
    sizes = np.frombuffer(sizes, dtype=np.int64) if len(sizes) else np.zeros(0, np.int64)
    # Largest first; ties by position in the file.
    top = np.lexsort((np.arange(sizes.shape[0]), -sizes))[:classes]
    top = top[sizes[top] > 0]
    rank = {int(line): r for r, line in enumerate(top)}
    members: list[np.ndarray | None] = [None] * len(rank)
    with _open_text(path) as f:
        for i, line in enumerate(f):
            r = rank.get(i)
            if r is not None:
                ids = np.asarray(line.split(), dtype=np.int64)
                ids = ids[(ids >= 0) & (ids < remap.shape[0])]
                members[r] = remap[ids]
    label = np.full(n, -1, dtype=np.int64)
    for r in range(len(members) - 1, -1, -1):  # the largest community is written last: wins
        ids = members[r]
        label[ids[ids >= 0]] = r
    return label, len(members)
