"""Access traces: which remote rows one trainer needed, minibatch by minibatch.

A trace is one ``.npz`` file per trainer (numpy's zip container, loaded without pickle), laid
out as documented in ``docs/traces.md``. Remote ids are stored sorted within each minibatch and
delta-encoded, which compresses them to a few bytes per id. Loading validates everything and
raises :class:`TraceError` with a message that names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "rudder-access-trace"
VERSION = 1
SUFFIX = ".npz"

_ARRAYS = {
    "offsets": np.int64,
    "id_deltas": np.int64,
    "local_counts": np.int64,
    "epochs": np.int32,
    "sample_s": np.float32,
    "fetch_s": np.float32,
    "compute_s": np.float32,
}
_OPTIONAL = {"prefill_ranking": np.int64, "phase": np.int8}
PHASES = ("train", "eval")  # what `phase` holds per minibatch, by index


class TraceError(ValueError):
    """A trace file that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class TraceMeta:
    """Facts about the run a trace came from."""

    graph: str
    num_nodes: int
    num_edges: int
    num_parts: int
    part_id: int
    trainer: int  # global trainer rank
    local_nodes: int  # nodes owned by this trainer's partition
    remote_node_count: int  # distinct remote nodes the partition can reach (buffer fractions)
    fanouts: tuple[int, ...]
    batch_size: int
    feat_dim: int
    feat_dtype: str = "float32"
    epochs: int = 1
    source: str = "synthetic"  # "synthetic" or "distdgl"
    timings: str = "modelled"  # "measured" or "modelled"
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def row_bytes(self) -> int:
        return self.feat_dim * np.dtype(self.feat_dtype).itemsize

    def capacity(self, fraction: float) -> int:
        """Buffer rows for a fraction of the reachable remote nodes."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"buffer fraction must lie in [0, 1], got {fraction}")
        return round(fraction * self.remote_node_count)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["fanouts"] = [int(f) for f in self.fanouts]
        # Metadata often comes from numpy arithmetic; store numpy scalars as plain numbers.
        return json.dumps(
            {"format": FORMAT, "version": VERSION, "meta": d},
            sort_keys=True,
            default=lambda o: o.item() if isinstance(o, np.generic) else str(o),
        )


@dataclass(frozen=True, slots=True)
class AccessTrace:
    """One trainer's remote accesses; minibatch ``i`` requested ``ids[offsets[i]:offsets[i+1]]``."""

    meta: TraceMeta
    offsets: np.ndarray
    ids: np.ndarray
    local_counts: np.ndarray
    epochs: np.ndarray
    sample_s: np.ndarray
    fetch_s: np.ndarray
    compute_s: np.ndarray
    prefill_ranking: np.ndarray | None = None  # remote ids by decreasing degree
    phase: np.ndarray | None = None  # int8 per minibatch: index into PHASES (None: all train)

    def phases(self) -> np.ndarray:
        """Per minibatch: 0 for training, 1 for an evaluation pass (all 0 if unrecorded)."""
        if self.phase is None:
            return np.zeros(self.num_minibatches, dtype=np.int8)
        return self.phase

    @property
    def num_minibatches(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def batch(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_minibatches):
            yield self.batch(i)

    def distinct_ids(self) -> int:
        return int(np.unique(self.ids).shape[0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "offsets": self.offsets,
            "id_deltas": _delta_encode(self.offsets, self.ids),
            "local_counts": self.local_counts,
            "epochs": self.epochs,
            "sample_s": self.sample_s,
            "fetch_s": self.fetch_s,
            "compute_s": self.compute_s,
        }
        if self.prefill_ranking is not None:
            arrays["prefill_ranking"] = self.prefill_ranking
        if self.phase is not None:
            arrays["phase"] = self.phase
        header = np.frombuffer(self.meta.to_json().encode(), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, header=header, **{k: np.asarray(v, dtype=_dtype(k)) for k, v in arrays.items()}
            )
        tmp.replace(path)  # never leave a half-written trace under the final name
        return path

    @classmethod
    def build(
        cls,
        meta: TraceMeta,
        batches: list[np.ndarray],
        *,
        local_counts: np.ndarray | None = None,
        epochs: np.ndarray | None = None,
        sample_s: np.ndarray | None = None,
        fetch_s: np.ndarray | None = None,
        compute_s: np.ndarray | None = None,
        prefill_ranking: np.ndarray | None = None,
        phase: np.ndarray | None = None,
    ) -> AccessTrace:
        """Assemble a trace from per-minibatch id arrays (sorted and de-duplicated here)."""
        n = len(batches)
        batches = [np.unique(np.asarray(b, dtype=np.int64)) for b in batches]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([b.shape[0] for b in batches], out=offsets[1:])
        ids = np.concatenate(batches) if n else np.empty(0, dtype=np.int64)

        def col(a: np.ndarray | None, dtype: type) -> np.ndarray:
            return np.zeros(n, dtype=dtype) if a is None else np.asarray(a, dtype=dtype)

        trace = cls(
            meta=meta,
            offsets=offsets,
            ids=ids,
            local_counts=col(local_counts, np.int64),
            epochs=col(epochs, np.int32),
            sample_s=col(sample_s, np.float32),
            fetch_s=col(fetch_s, np.float32),
            compute_s=col(compute_s, np.float32),
            prefill_ranking=prefill_ranking,
            phase=None if phase is None else np.asarray(phase, dtype=np.int8),
        )
        _check(trace, "<memory>")
        return trace


@dataclass(slots=True)
class TraceRecorder:
    """Collects a live run's accesses, minibatch by minibatch, into an :class:`AccessTrace`.

    A minibatch's compute time is known only after it trained (the look-ahead has moved on by
    then): :meth:`set_compute` fills it in later.
    """

    batches: list[np.ndarray] = field(default_factory=list)
    local_counts: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    fetch_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)

    def add(
        self,
        remote_ids: np.ndarray,
        local: int,
        epoch: int,
        sample_s: float,
        fetch_s: float,
        phase: int = 0,
    ) -> None:
        self.phase.append(phase)
        self.batches.append(np.asarray(remote_ids, dtype=np.int64))
        self.local_counts.append(local)
        self.epochs.append(epoch)
        self.sample_s.append(sample_s)
        self.fetch_s.append(fetch_s)
        self.compute_s.append(0.0)

    def set_compute(self, minibatch: int, seconds: float) -> None:
        if 0 <= minibatch < len(self.compute_s):
            self.compute_s[minibatch] = seconds

    def build(self, meta: TraceMeta, prefill_ranking: np.ndarray | None = None) -> AccessTrace:
        return AccessTrace.build(
            meta,
            self.batches,
            local_counts=np.array(self.local_counts, dtype=np.int64),
            epochs=np.array(self.epochs, dtype=np.int32),
            sample_s=np.array(self.sample_s),
            fetch_s=np.array(self.fetch_s),
            compute_s=np.array(self.compute_s),
            prefill_ranking=prefill_ranking,
            phase=np.array(self.phase, dtype=np.int8) if any(self.phase) else None,
        )


def _dtype(name: str) -> type:
    return _ARRAYS.get(name) or _OPTIONAL[name]


def _delta_encode(offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    d = np.empty_like(ids)
    if ids.shape[0]:
        d[0] = ids[0]
        d[1:] = np.diff(ids)
        starts = offsets[:-1][np.diff(offsets) > 0]
        d[starts] = ids[starts]  # each minibatch restarts from its first id
    return d


def _delta_decode(offsets: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    if deltas.shape[0] == 0:
        return deltas.copy()
    csum = np.cumsum(deltas)
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    # Subtract, within each minibatch, what the running sum carried in from earlier ones.
    carried = np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0)
    return csum - np.repeat(carried, lengths)


def load_trace(path: str | Path) -> AccessTrace:
    """Load and validate one trainer's trace file."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise TraceError(f"{path}: not a readable trace (truncated or corrupt?): {e}") from None
    try:
        header = json.loads(bytes(data.pop("header")).decode())
    except KeyError:
        raise TraceError(f"{path}: no header; not a Rudder access trace") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceError(f"{path}: corrupt header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TraceError(f"{path}: not a Rudder access trace (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise TraceError(
            f"{path}: trace format version {header.get('version')!r}; this Rudder reads "
            f"version {VERSION}. Re-record the trace or use a matching Rudder release."
        )
    try:
        m = dict(header["meta"])
        m["fanouts"] = tuple(m["fanouts"])
        meta = TraceMeta(**m)
    except (KeyError, TypeError) as e:
        raise TraceError(f"{path}: bad metadata: {e}") from None
    missing = set(_ARRAYS) - set(data)
    if missing:
        raise TraceError(f"{path}: missing arrays {sorted(missing)}")
    for k, v in data.items():
        if (k in _ARRAYS or k in _OPTIONAL) and (v.dtype != _dtype(k) or v.ndim != 1):
            raise TraceError(f"{path}: array {k!r} has dtype {v.dtype} and {v.ndim} dims")
    offsets = data["offsets"]
    if (
        offsets.shape[0] < 1
        or offsets[0] != 0
        or np.any(np.diff(offsets) < 0)
        or (offsets[-1] != data["id_deltas"].shape[0])
    ):
        raise TraceError(f"{path}: offsets do not delimit the id array")
    trace = AccessTrace(
        meta=meta,
        offsets=offsets,
        ids=_delta_decode(offsets, data["id_deltas"]),
        local_counts=data["local_counts"],
        epochs=data["epochs"],
        sample_s=data["sample_s"],
        fetch_s=data["fetch_s"],
        compute_s=data["compute_s"],
        prefill_ranking=data.get("prefill_ranking"),
        phase=data.get("phase"),
    )
    _check(trace, str(path))
    return trace


def _check(trace: AccessTrace, where: str) -> None:
    n = trace.num_minibatches
    for name in ("local_counts", "epochs", "sample_s", "fetch_s", "compute_s"):
        if getattr(trace, name).shape[0] != n:
            raise TraceError(
                f"{where}: {name} has {getattr(trace, name).shape[0]} entries, "
                f"expected one per minibatch ({n})"
            )
    if trace.phase is not None and (
        trace.phase.shape[0] != n
        or trace.phase.min(initial=0) < 0
        or trace.phase.max(initial=0) >= len(PHASES)
    ):
        raise TraceError(f"{where}: phase must hold one of {len(PHASES)} phases per minibatch")
    ids = trace.ids
    if ids.shape[0] > 1:
        # Compare neighbours within a minibatch only, not across a boundary.
        inner = np.ones(ids.shape[0] - 1, dtype=bool)
        bounds = trace.offsets[1:-1]
        inner[bounds[(bounds > 0) & (bounds < ids.shape[0])] - 1] = False
        if np.any(np.diff(ids)[inner] <= 0):
            raise TraceError(f"{where}: ids within a minibatch must be sorted and unique")
    if ids.shape[0] and ids.min() < 0:
        raise TraceError(f"{where}: negative node ids")


def find_traces(path: str | Path) -> list[Path]:
    """Trace files at ``path``: the file itself, or every ``*.npz`` in a directory (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"*{SUFFIX}"))
        if not files:
            raise TraceError(f"{path}: directory holds no {SUFFIX} trace files")
        return files
    if not path.exists():
        raise TraceError(f"{path}: no such trace file or directory")
    return [path]
