"""A small :class:`WorkerConfig` for tests that need a run config but no partitions."""

from __future__ import annotations

from rudder.trainer_hooks.distdgl.config import PartInfo, TrainingOptions, WorkerConfig


def worker_config(
    out_dir: str = "o",
    *,
    parts: tuple[PartInfo, ...] | None = None,
    trainers: int = 1,
    graph_name: str = "g",
    num_nodes: int = 20,
    num_edges: int = 40,
    **options,
) -> WorkerConfig:
    """Two machines of ``trainers`` trainers; ``options`` go to :class:`TrainingOptions`."""
    if parts is None:
        parts = tuple(PartInfo(p, (p * 10, p * 10 + 10), 5, "r.npy") for p in range(2))
    return WorkerConfig(
        part_config="p.json",
        graph_name=graph_name,
        parts=parts,
        feat_dim=4,
        num_classes=2,
        num_nodes=num_nodes,
        num_edges=num_edges,
        ip_config="ip",
        out_dir=out_dir,
        num_machines=2,
        trainers_per_machine=trainers,
        options=TrainingOptions(**options),
    )
