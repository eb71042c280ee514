"""The on-disk graph format every ``rudder graph`` command reads and writes.

A graph is a directory of plain ``.npy`` arrays plus ``meta.json``; arrays load memory-mapped,
so a 10^7-node graph opens instantly and never needs pickling::

    DIR/meta.json        {"format": "rudder-graph", "version": 1, "name": ..., ...}
    DIR/indptr.npy       int64[N+1]   CSR of the undirected graph (both directions stored)
    DIR/indices.npy      int64[E]
    DIR/feat.npy         float32[N, F]
    DIR/label.npy        int64[N]
    DIR/train_mask.npy   bool[N]      (also val_mask.npy, test_mask.npy)
    DIR/community.npy    int32[N]     optional (generated graphs)
    DIR/time.npy         float32[N]   optional (generated graphs): arrival time in [0, 1)

Readers of graphs written before an optional array existed see it as ``None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rudder.graphs.csr import CSRStructure

FORMAT = "rudder-graph"
VERSION = 1
_ARRAYS = {
    "indptr": np.int64,
    "indices": np.int64,
    "feat": np.float32,
    "label": np.int64,
    "train_mask": np.bool_,
    "val_mask": np.bool_,
    "test_mask": np.bool_,
}
_OPTIONAL = {"community": np.int32, "time": np.float32}


class GraphFormatError(ValueError):
    """A graph directory that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class GraphData(CSRStructure):
    """A node-classification graph: structure, features, labels and splits."""

    name: str
    indptr: np.ndarray
    indices: np.ndarray
    feat: np.ndarray
    label: np.ndarray
    train_mask: np.ndarray
    val_mask: np.ndarray
    test_mask: np.ndarray
    community: np.ndarray | None = None
    time: np.ndarray | None = None  # arrival time of each node in [0, 1) (generated graphs)
    source: str = "synthetic"  # "synthetic", "ogb" or "snap"
    extra: dict = field(default_factory=dict)  # generator spec, dataset facts

    @property
    def feat_dim(self) -> int:
        return int(self.feat.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.label.max()) + 1 if self.label.shape[0] else 0

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "feat_dim": self.feat_dim,
            "num_classes": self.num_classes,
            "train_nodes": int(self.train_mask.sum()),
            "source": self.source,
            "extra": self.extra,
        }

    def check(self, where: str = "<memory>") -> None:
        """Raise :class:`GraphFormatError` if arrays disagree on shapes or dtypes."""
        n = self.num_nodes
        for name, dtype in {**_ARRAYS, **_OPTIONAL}.items():
            a = getattr(self, name)
            if a is None:
                continue
            if a.dtype != dtype:
                raise GraphFormatError(
                    f"{where}: {name} has dtype {a.dtype}, expected {np.dtype(dtype)}"
                )
            if name not in ("indptr", "indices") and a.shape[0] != n:
                raise GraphFormatError(f"{where}: {name} has {a.shape[0]} rows, expected {n}")
        if self.feat.ndim != 2:
            raise GraphFormatError(f"{where}: feat must be 2-D, got shape {self.feat.shape}")
        if self.indptr[0] != 0 or self.indptr[-1] != self.indices.shape[0]:
            raise GraphFormatError(f"{where}: indptr does not delimit indices")


def save_graph(data: GraphData, out: str | Path) -> Path:
    """Write ``data`` to directory ``out`` (created; existing arrays are replaced)."""
    data.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*_ARRAYS, *_OPTIONAL):
        a = getattr(data, name)
        if a is not None:
            np.save(out / f"{name}.npy", np.ascontiguousarray(a))
    # meta.json last: its presence marks a complete graph.
    (out / "meta.json").write_text(json.dumps(data.meta(), indent=2, sort_keys=True) + "\n")
    return out


def load_graph(path: str | Path, mmap: bool = True) -> GraphData:
    """Open a graph directory (arrays memory-mapped unless ``mmap=False``)."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise GraphFormatError(
            f"{path}: not a Rudder graph directory (no meta.json); create one with "
            "`rudder graph generate` or `rudder graph import`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise GraphFormatError(f"{meta_file}: corrupt: {e}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise GraphFormatError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; this Rudder "
            f"reads {FORMAT!r} version {VERSION}"
        )
    arrays = {}
    for name in (*_ARRAYS, *_OPTIONAL):
        f = path / f"{name}.npy"
        if not f.is_file():
            if name in _OPTIONAL:
                arrays[name] = None
                continue
            raise GraphFormatError(f"{path}: missing {f.name}")
        try:
            arrays[name] = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as e:
            raise GraphFormatError(f"{f}: unreadable: {e}") from None
    data = GraphData(
        name=meta["name"],
        source=meta.get("source", "synthetic"),
        extra=meta.get("extra", {}),
        **arrays,
    )
    data.check(str(path))
    return data
