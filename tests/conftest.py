"""Shared helpers: small traces built in memory, and a reference feature source."""

from __future__ import annotations

import numpy as np
import pytest

from rudder.trainer_hooks.trace import AccessTrace, TraceMeta


def make_meta(remote_node_count: int = 100, feat_dim: int = 4, **kw) -> TraceMeta:
    base = dict(
        graph="test",
        num_nodes=1000,
        num_edges=4000,
        num_parts=2,
        part_id=0,
        trainer=0,
        local_nodes=500,
        remote_node_count=remote_node_count,
        fanouts=(2, 3),
        batch_size=8,
        feat_dim=feat_dim,
    )
    base.update(kw)
    return TraceMeta(**base)


def make_trace(batches, remote_node_count: int | None = None, ranking=None, **meta) -> AccessTrace:
    batches = [np.asarray(b, dtype=np.int64) for b in batches]
    distinct = np.unique(np.concatenate(batches)) if batches else np.empty(0, np.int64)
    count = remote_node_count if remote_node_count is not None else max(1, distinct.shape[0])
    if ranking is None:
        ranking = distinct
    return AccessTrace.build(make_meta(count, **meta), batches, prefill_ranking=np.asarray(ranking))


def random_batches(
    rng: np.random.Generator, n_batches: int, universe: int, max_len: int, skew: float = 1.2
) -> list[np.ndarray]:
    """Minibatches of unique ids with a Zipf-like popularity, like sampled remote inputs."""
    p = 1.0 / np.arange(1, universe + 1) ** skew
    p /= p.sum()
    out = []
    for _ in range(n_batches):
        k = int(rng.integers(0, max_len + 1))
        k = min(k, universe)
        out.append(np.sort(rng.choice(universe, size=k, replace=False, p=p)).astype(np.int64))
    return out


def feature_rows(ids: np.ndarray, dim: int = 4) -> np.ndarray:
    """The 'remote store': a deterministic, distinct float32 row per node id."""
    ids = np.asarray(ids, dtype=np.int64)
    return (ids[:, None] * 1000.0 + np.arange(dim)[None, :] + 0.25).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
