"""Graph directories to DGL: a ``DGLGraph`` for :func:`to_dgl`, DistDGL partitions.

``dgl`` and ``torch`` are imported inside the functions: importing this module (or
``rudder.graphs``) stays cheap and works where DGL does not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rudder.graphs.store import GraphData

if TYPE_CHECKING:
    import dgl
    import torch

log = logging.getLogger(__name__)

NODE_DATA = ("feat", "label", "train_mask", "val_mask", "test_mask")
OPTIONAL_NODE_DATA = ("time",)  # carried when the graph has them
PART_METHODS = ("metis", "random")


def to_dgl(data: GraphData) -> dgl.DGLGraph:
    """A homogeneous ``DGLGraph`` of ``data`` (int64 ids, edges in CSR order).

    ndata: ``feat`` (float32[N, F]), ``label`` (int64), ``train_mask``/``val_mask``/
    ``test_mask`` (bool), and ``time`` (float32, arrival time in [0, 1)) when the graph has
    it. Memory-mapped arrays are shared, not copied. ``partition_graph`` carries every ndata
    array into the partitions, so DistDGL trainers read them as ``g.ndata[...]``.
    """
    import dgl
    import torch

    g = dgl.graph(
        ("csr", (_tensor(data.indptr), _tensor(data.indices), torch.empty(0, dtype=torch.int64))),
        num_nodes=data.num_nodes,
    )
    for key in NODE_DATA:
        g.ndata[key] = _tensor(getattr(data, key))
    for key in OPTIONAL_NODE_DATA:
        if getattr(data, key) is not None:
            g.ndata[key] = _tensor(getattr(data, key))
    return g


def _tensor(a: np.ndarray) -> torch.Tensor:
    import torch

    if not a.flags.writeable:
        # torch cannot wrap read-only memory. A copy-on-write map of the same file is writable
        # and costs no copy (DGL only reads these arrays).
        if isinstance(a, np.memmap) and a.filename is not None:
            a = np.memmap(a.filename, dtype=a.dtype, mode="c", shape=a.shape, offset=a.offset)
        else:
            a = a.copy()
    return torch.from_numpy(np.ascontiguousarray(a))


def safe_graph_name(name: str) -> str:
    """``name`` made safe for DistDGL, which uses it in file and shared-memory names."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_") or "graph"


def partition_dgl(
    g: dgl.DGLGraph, *, graph_name: str, num_parts: int, out: str | Path, method: str
) -> np.ndarray:
    """Run ``dgl.distributed.partition_graph`` into ``out``; return the new -> original ids.

    METIS balances training nodes (``balance_ntypes=train_mask``) and edges. DGL's progress
    lines go to this module's logger instead of stdout.
    """
    import dgl

    if method not in PART_METHODS:
        raise ValueError(f"unknown partition method {method!r}; choose from {PART_METHODS}")
    with contextlib.redirect_stdout(_LogLines(log)):
        orig_nids, _ = dgl.distributed.partition_graph(
            g,
            graph_name=graph_name,
            num_parts=num_parts,
            out_path=str(out),
            part_method=method,
            balance_ntypes=g.ndata["train_mask"] if method == "metis" else None,
            balance_edges=True,
            return_mapping=True,
        )
    return orig_nids.numpy().astype(np.int64, copy=False)


class _LogLines(io.TextIOBase):
    """A text stream that logs each complete line (for libraries that print)."""

    def __init__(self, logger: logging.Logger):
        self._log = logger
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                self._log.info("dgl: %s", line.strip())
        return len(s)
