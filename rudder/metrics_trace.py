"""Metrics traces: a trainer's :class:`~rudder.protocol.Metrics`, one JSON object per line.

The one reader (and line writer) of the format described in docs/traces.md, shared by the
trainer-side tools (``rudder replay --metrics-out``, a run's ``metrics-rank-R.jsonl``) and the
controller (prompt evaluation, classifier training). Imports the standard library and the
wire protocol's ``Metrics`` only.

- :func:`read_metrics_trace`: one file's records in file order.
- :func:`read_metrics_per_trainer`: one file's records per trainer, in minibatch order.
- :func:`find_metrics_traces`: files as named, directories searched for metrics ``*.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from rudder.protocol import Metrics

__all__ = [
    "find_metrics_traces",
    "is_metrics_trace",
    "metrics_line",
    "read_metrics_per_trainer",
    "read_metrics_trace",
]


def metrics_line(metrics: Metrics) -> str:
    """``metrics`` as one line of a metrics trace (newline included)."""
    # Metrics built from numpy arithmetic may hold numpy scalars: write them as plain numbers.
    return json.dumps(metrics.to_dict(), default=lambda v: v.item()) + "\n"


def read_metrics_trace(path: str | os.PathLike[str]) -> list[Metrics]:
    """The records of a metrics trace, in file order; blank lines are skipped.

    ValueError naming the file (and ``file:line`` for a bad record) when the file is missing,
    unreadable, holds anything but metrics records, or holds none.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such metrics trace")
    out: list[Metrics] = []
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(Metrics.from_dict(json.loads(line)))
                except (json.JSONDecodeError, TypeError, ValueError) as e:
                    raise ValueError(f"{path}:{lineno}: not a metrics record: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the metrics trace: {e}") from None
    if not out:
        raise ValueError(f"{path}: empty metrics trace")
    return out


def per_trainer(records: Iterable[Metrics], source: str = "metrics") -> dict[int, list[Metrics]]:
    """``records`` grouped by trainer, each in minibatch order; ValueError on a repeated one."""
    grouped: dict[int, list[Metrics]] = {}
    for m in records:
        grouped.setdefault(m.trainer, []).append(m)
    for trainer, ms in grouped.items():
        ms.sort(key=lambda m: m.minibatch)
        if len({m.minibatch for m in ms}) != len(ms):
            raise ValueError(f"{source}: trainer {trainer} reports a minibatch twice")
    return grouped


def read_metrics_per_trainer(path: str | os.PathLike[str]) -> dict[int, list[Metrics]]:
    """One metrics trace per trainer, in minibatch order (errors as :func:`read_metrics_trace`)."""
    return per_trainer(read_metrics_trace(path), str(path))


def is_metrics_trace(path: str | os.PathLike[str]) -> bool:
    """Whether the first non-blank line of ``path`` is a metrics record (reads no further)."""
    try:
        with open(path) as f:
            first = next((line for line in f if line.strip()), "")
        Metrics.from_dict(json.loads(first))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError):
        return False
    return True


def find_metrics_traces(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Metrics trace files: named files as given, directories searched for ``*.jsonl``.

    In a directory, JSON-lines files of other records (a run's ``steps-rank-R.jsonl``) are
    skipped; a named file must be a metrics trace (its reader says so if it is not).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*.jsonl")) if is_metrics_trace(f)]
            if not found:
                raise ValueError(f"{p}: no metrics traces (*.jsonl of metrics records)")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files
