"""What the buffer needs to know about a trainer's partition, read from a ``DistGraph``.

- The ids this partition owns: DistDGL relabels nodes so each partition owns one contiguous
  range; the partition book gives it (``partid2nids``).
- The reachable remote nodes (the buffer fraction's denominator) and their degree ranking (the
  static/periodic prefill order): from Rudder's partition sidecar ``rudder.json`` when the
  partitions came from ``rudder graph partition`` (found through ``rudder train``'s run config
  or next to DGL's partition config, ``DGL_CONF_PATH``). Partitions made by DGL's own
  ``partition_graph`` have no sidecar: then the partition's 1-hop halo (the remote nodes its
  local graph holds) is the denominator, ranked by their degree within the partition.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from rudder.trainer_hooks.results import PartitionFacts

log = logging.getLogger(__name__)


def owned_range(pb: Any) -> tuple[int, int]:
    """[lo, hi) of the node ids the trainer's partition owns."""
    nids = pb.partid2nids(pb.partid)
    if len(nids) == 0:
        return 0, 0
    lo, hi = int(nids[0]), int(nids[-1]) + 1
    if hi - lo != len(nids):
        raise ValueError("the partition's node ids are not one contiguous range (DistDGL's)")
    return lo, hi


def graph_facts(g: Any, feat_dim: int, environ: dict | None = None) -> PartitionFacts:
    """The :class:`PartitionFacts` of this trainer's partition of the ``DistGraph`` ``g``."""
    env = os.environ if environ is None else environ
    pb = g.get_partition_book()
    part = int(pb.partid)
    common = {
        "owned": owned_range(pb),
        "feat_dim": feat_dim,
        "graph": str(getattr(g, "graph_name", "")),
        "num_nodes": int(g.num_nodes()),
        "num_edges": int(g.num_edges()),
        "num_parts": int(pb.num_partitions()),
        "part_id": part,
    }
    sidecar = _sidecar_part(part, env)
    if sidecar is not None:
        count, ranking = sidecar
        return PartitionFacts(remote_nodes=count, prefill_ranking=ranking, **common)
    count, ranking = halo_ranking(g)
    log.info(
        "partition %d: no rudder.json beside the partition config; the buffer is sized on the "
        "1-hop halo (%d remote nodes)",
        part,
        count,
    )
    return PartitionFacts(remote_nodes=count, prefill_ranking=ranking, **common)


def _sidecar_part(part: int, env: Any) -> tuple[int, np.ndarray] | None:
    run_config = env.get("RUDDER_RUN_CONFIG")
    if run_config:
        from rudder.trainer_hooks.distdgl.config import WorkerConfig

        info = WorkerConfig.load(run_config).parts[part]
        return info.remote_node_count, np.load(info.remote_ranking)
    conf = env.get("DGL_CONF_PATH")
    if conf and (Path(conf).parent / "rudder.json").is_file():
        from rudder.graphs.partitioned import load_partitions

        pset = load_partitions(Path(conf).parent)
        return pset.partitions[part].remote_node_count, pset.remote_ranking(part)
    return None


def halo_ranking(g: Any) -> tuple[int, np.ndarray]:
    """The partition's halo nodes (global ids) by decreasing local in-degree, and their count."""
    local = g.local_partition
    halo = (local.ndata["inner_node"] == 0).nonzero().squeeze(1)
    degree = local.in_degrees(halo).numpy()
    global_ids = local.ndata["_ID"][halo].numpy().astype(np.int64)  # dgl.NID
    order = np.lexsort((global_ids, -degree))
    return int(halo.shape[0]), global_ids[order]


def trainer_rank(environ: dict | None = None) -> int:
    """The trainer's global rank: ``RUDDER_RANK``, else torch.distributed's, else 0."""
    env = os.environ if environ is None else environ
    if env.get("RUDDER_RANK"):
        return int(env["RUDDER_RANK"])
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
