"""The bench's inputs, made once and reused: generated graphs and their partitions.

Each directory carries the spec it was made from (``bench-spec.json``); a later bench run with
the same spec reuses it, a different spec makes it again.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from rudder.graphs.features import DatasetSpec

log = logging.getLogger(__name__)

MARKER = "bench-spec.json"


def _fresh(path: Path, spec: dict) -> bool:
    marker = path / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == spec


def _mark(path: Path, spec: dict) -> None:
    (path / MARKER).write_text(json.dumps(spec, indent=2) + "\n")


def graph(spec: DatasetSpec, out: Path) -> Path:
    """The generated graph of ``spec`` in ``out``."""
    from rudder.graphs.features import write_dataset

    key = {"dataset": asdict(spec)}
    if _fresh(out, key):
        return out
    if out.exists():
        shutil.rmtree(out)
    log.info("generating the graph: %d nodes -> %s", spec.graph.nodes, out)
    write_dataset(spec, out)
    _mark(out, key)
    return out


def partitions(graph_dir: Path, parts: int, out: Path, method: str = "metis") -> Path:
    """``graph_dir`` cut into ``parts`` DistDGL partitions in ``out`` (METIS, or at random)."""
    from rudder.graphs.partitioned import partition
    from rudder.graphs.store import load_graph

    key: dict = {"graph": json.loads((graph_dir / MARKER).read_text()), "parts": parts}
    if method != "metis":  # METIS partitions made before there was a choice stay valid
        key["method"] = method
    if _fresh(out, key):
        return out
    if out.exists():
        shutil.rmtree(out)
    log.info("partitioning %s into %d parts (%s) -> %s", graph_dir, parts, method, out)
    partition(load_graph(graph_dir), out, parts=parts, method=method)
    _mark(out, key)
    return out
