"""Node-classification datasets on generated graphs: labels, features, splits, writing.

The model: every community maps (seeded) to one of ``K`` classes, so a node's label follows its
community; a node's features are its class centroid plus Gaussian noise::

    centroid[k] ~ N(0, I / F)          (expected norm 1, whatever F)
    feat[u]     = centroid[label[u]] + noise * N(0, I)          (float32)

Two centroids lie about sqrt(2) apart, so a single node's features separate two classes with
a margin of about 0.71 / noise, independent of ``F``; averaging ``d`` same-class neighbours
divides the noise by sqrt(d). With ``noise = 1`` an MLP on one node's features is well above
chance but far from perfect, and a GNN, which averages over neighbours that mostly share the
community, does better: the task rewards the neighbourhood sampling that Rudder's buffer serves.

Large graphs are written straight to disk: the edge list is saved and freed before features
are generated, and features are streamed to ``feat.npy`` block by block, so a 10^7 x 100 float
matrix is never in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from rudder.graphs.store import GraphData, GraphFormatError, load_graph
from rudder.graphs.synthetic import GraphSpec, Progress, generate, node_times

log = logging.getLogger(__name__)

# The arrays of graphs/store.py's layout (community and time optional), and every file a graph
# directory may hold: imports add orig_ids.npy (the dataset's own id of each node).
STORE_ARRAYS = (
    "indptr",
    "indices",
    "feat",
    "label",
    "train_mask",
    "val_mask",
    "test_mask",
    "community",
    "time",
)
_OPTIONAL_ARRAYS = ("community", "time")
GRAPH_FILES = (*STORE_ARRAYS, "orig_ids")
_BLOCK_BYTES = 64 << 20  # feature rows per block: 64 MB of float32


@dataclass(kw_only=True, slots=True, frozen=True)
class DatasetSpec:
    """A generated node-classification dataset: a graph plus labels, features and splits."""

    graph: GraphSpec = field(default_factory=GraphSpec)
    feat_dim: int = 100
    classes: int = 16
    feat_noise: float = 1.0  # std of the per-entry noise; centroids have norm ~1
    train_fraction: float = 0.1
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    name: str = ""  # default: derived from the graph spec

    def __post_init__(self) -> None:
        if self.feat_dim < 1:
            raise ValueError(f"feat_dim must be >= 1, got {self.feat_dim}")
        if not 2 <= self.classes <= self.graph.communities:
            raise ValueError(
                f"classes must lie in [2, communities={self.graph.communities}] (each community "
                f"carries one class), got {self.classes}"
            )
        if self.feat_noise < 0:
            raise ValueError(f"feat_noise must be >= 0, got {self.feat_noise}")
        check_fractions(self.train_fraction, self.val_fraction, self.test_fraction)

    @property
    def dataset_name(self) -> str:
        g = self.graph
        kind = "" if g.family == "dcsbm" else f"{g.family}-"
        return self.name or (
            f"synthetic-{kind}n{g.nodes}-d{g.avg_degree:g}-c{g.communities}-s{g.seed}"
        )

    def extra(self) -> dict:
        """What ``meta.json`` records about how the dataset was made."""
        return {
            "generator": self.graph.family,
            "graph_spec": asdict(self.graph),
            "classes": self.classes,
            "feat_noise": self.feat_noise,
            "fractions": [self.train_fraction, self.val_fraction, self.test_fraction],
        }


def check_fractions(train: float, val: float, test: float) -> None:
    """Raise ``ValueError`` unless the split fractions are valid and fit in one node set."""
    for name, f in (("train", train), ("val", val), ("test", test)):
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name} fraction must lie in [0, 1], got {f}")
    if train <= 0.0:
        raise ValueError("train fraction must be > 0: the trainers need training nodes")
    if train + val + test > 1.0 + 1e-9:
        raise ValueError(f"train + val + test fractions exceed 1: {train} + {val} + {test}")


# ---------------------------------------------------------------------------------------------
# Labels, splits, features: pure functions of their inputs and a seed.


def community_classes(communities: int, classes: int, seed: int) -> np.ndarray:
    """The class of each community: a seeded shuffle, every class used when C >= K."""
    rng = np.random.default_rng([seed, 1])
    return (rng.permutation(communities) % classes).astype(np.int64)


def degree_classes(degrees: np.ndarray, classes: int) -> np.ndarray:
    """``classes`` equal-size buckets by degree (ties by id): bucket 0 the lowest degrees."""
    n = degrees.shape[0]
    order = np.argsort(degrees, kind="stable")
    label = np.empty(n, dtype=np.int64)
    label[order] = np.arange(n, dtype=np.int64) * classes // max(n, 1)
    return label


def random_split(
    n: int,
    train: float,
    val: float,
    test: float,
    seed: int,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint seeded train/val/test masks with the given fractions of the ``eligible`` nodes.

    ``eligible`` (bool[n], default all) is the pool; fractions are of the pool's size, and a
    non-empty pool always gets at least one training node.
    """
    check_fractions(train, val, test)
    pool = np.arange(n, dtype=np.int64) if eligible is None else np.flatnonzero(eligible)
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(pool)
    size = order.shape[0]
    n_train = max(1, round(train * size)) if size else 0
    n_val = min(round(val * size), size - n_train)
    n_test = min(round(test * size), size - n_train - n_val)
    masks = []
    for a, b in (
        (0, n_train),
        (n_train, n_train + n_val),
        (n_train + n_val, n_train + n_val + n_test),
    ):
        m = np.zeros(n, dtype=np.bool_)
        m[order[a:b]] = True
        masks.append(m)
    return masks[0], masks[1], masks[2]


def class_centroids(classes: int, feat_dim: int, seed: int) -> np.ndarray:
    """``classes`` random centroids of expected norm 1 (float32[K, F])."""
    rng = np.random.default_rng([seed, 2])
    return (rng.standard_normal((classes, feat_dim)) / np.sqrt(feat_dim)).astype(np.float32)


def feature_blocks(
    label: np.ndarray, centroids: np.ndarray, noise: float, seed: int, block_rows: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, rows)`` blocks of ``centroid[label] + noise * N(0, 1)``, in order.

    The noise is drawn row-major from one generator, so the features do not depend on the
    block size. ``rows`` is one reused buffer: copy or write it out before the next block.
    """
    n, dim = label.shape[0], centroids.shape[1]
    block_rows = block_rows or max(1, _BLOCK_BYTES // (4 * dim))
    rng = np.random.default_rng([seed, 4])
    buf = np.empty((min(block_rows, max(n, 1)), dim), dtype=np.float32)
    for a in range(0, n, block_rows):
        rows = buf[: min(block_rows, n - a)]
        rng.standard_normal(out=rows, dtype=np.float32)
        rows *= np.float32(noise)
        rows += centroids[label[a : a + rows.shape[0]]]
        yield a, rows


# ---------------------------------------------------------------------------------------------
# Writing graph directories piece by piece.


class NpyWriter:
    """Write one ``.npy`` file block of rows by block; the full shape is declared up front.

    On an exception inside ``with`` the partial file is removed; leaving the block with fewer
    rows written than declared raises :class:`GraphFormatError`.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: np.dtype | type):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 -- closed by close()/__exit__
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + rows.shape[0] > self.shape[0]:
            raise GraphFormatError(
                f"{self.path}: block of shape {rows.shape} does not fit an array of shape "
                f"{self.shape} with {self.rows} rows written"
            )
        self._file.write(memoryview(rows).cast("B"))
        self.rows += rows.shape[0]

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise GraphFormatError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        self._file.close()
        self.path.unlink(missing_ok=True)


def begin_graph_dir(out: str | Path) -> Path:
    """Create ``out`` for a new graph, removing a previous graph's files (never anything else).

    ``meta.json`` goes first, so a run that dies half-way leaves no directory that looks
    complete.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    for name in GRAPH_FILES:
        (out / f"{name}.npy").unlink(missing_ok=True)
    return out


def write_features(
    path: str | Path,
    label: np.ndarray,
    centroids: np.ndarray,
    noise: float,
    seed: int,
    on_progress: Progress | None = None,
) -> None:
    """Stream :func:`feature_blocks` into ``path`` (``float32[N, F]``)."""
    n = label.shape[0]
    with NpyWriter(path, (n, centroids.shape[1]), np.float32) as w:
        for a, rows in feature_blocks(label, centroids, noise, seed):
            w.write(rows)
            if on_progress is not None:
                on_progress("features", a + rows.shape[0], n)


def seal_graph_dir(out: str | Path, *, name: str, source: str, extra: dict) -> GraphData:
    """Check the arrays written into ``out``, then write ``meta.json`` (last) and reopen it."""
    out = Path(out)
    arrays = {}
    for key in STORE_ARRAYS:
        f = out / f"{key}.npy"
        if f.is_file():
            arrays[key] = np.load(f, mmap_mode="r", allow_pickle=False)
        elif key not in _OPTIONAL_ARRAYS:
            raise GraphFormatError(f"{out}: {f.name} was not written")
    data = GraphData(name=name, source=source, extra=extra, **arrays)
    data.check(str(out))
    (out / "meta.json").write_text(json.dumps(data.meta(), indent=2, sort_keys=True) + "\n")
    return load_graph(out)


# ---------------------------------------------------------------------------------------------
# Whole datasets.


def generate_dataset(spec: DatasetSpec, on_progress: Progress | None = None) -> GraphData:
    """Generate ``spec`` in memory (for small graphs and tests; see :func:`write_dataset`)."""
    graph = generate(spec.graph, on_progress)
    label, masks = _labels_and_masks(spec, graph.community)
    seed = spec.graph.seed
    centroids = class_centroids(spec.classes, spec.feat_dim, seed)
    feat = np.empty((graph.num_nodes, spec.feat_dim), dtype=np.float32)
    for a, rows in feature_blocks(label, centroids, spec.feat_noise, seed):
        feat[a : a + rows.shape[0]] = rows
    return GraphData(
        name=spec.dataset_name,
        indptr=graph.indptr,
        indices=graph.indices,
        feat=feat,
        label=label,
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
        community=graph.community,
        time=node_times(spec.graph),
        source="synthetic",
        extra=spec.extra(),
    )


def write_dataset(
    spec: DatasetSpec, out: str | Path, on_progress: Progress | None = None
) -> GraphData:
    """Generate ``spec`` straight into graph directory ``out``; returns it memory-mapped.

    Equal, array for array, to :func:`generate_dataset` for the same spec. Peak memory is the
    edge generation's (about 35 bytes per undirected edge), not the feature matrix's.
    """
    out = begin_graph_dir(out)
    graph = generate(spec.graph, on_progress)
    log.info("graph: %d nodes, %d directed edges", graph.num_nodes, graph.num_edges)
    np.save(out / "indptr.npy", graph.indptr)
    np.save(out / "indices.npy", graph.indices)
    np.save(out / "community.npy", graph.community)
    np.save(out / "time.npy", node_times(spec.graph))
    community = graph.community
    del graph  # the edge list is the largest array: free it before the features
    label, masks = _labels_and_masks(spec, community)
    np.save(out / "label.npy", label)
    for key, m in zip(("train_mask", "val_mask", "test_mask"), masks, strict=True):
        np.save(out / f"{key}.npy", m)
    seed = spec.graph.seed
    centroids = class_centroids(spec.classes, spec.feat_dim, seed)
    log.info("writing %d x %d features", label.shape[0], spec.feat_dim)
    write_features(out / "feat.npy", label, centroids, spec.feat_noise, seed, on_progress)
    return seal_graph_dir(out, name=spec.dataset_name, source="synthetic", extra=spec.extra())


def _labels_and_masks(spec: DatasetSpec, community: np.ndarray):
    seed = spec.graph.seed
    label = community_classes(spec.graph.communities, spec.classes, seed)[community]
    masks = random_split(
        community.shape[0], spec.train_fraction, spec.val_fraction, spec.test_fraction, seed
    )
    return label, masks
