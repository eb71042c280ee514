"""Patches that let several DistDGL "machines" share one host without namespaces (no root).

dgl 2.1 assumes one machine per IP address and per /dev/shm. On a single host with every
machine on 127.0.0.1 it breaks twice (see docs/cluster.md):

1. a client finds its machine id by matching local addresses against ip_config, so every
   client thinks it is machine 0;
2. servers put partition data in POSIX shared memory named after the graph and data names
   only, so the servers of different machines overwrite each other's segments.

:func:`apply` fixes both in the calling process, before ``dgl.distributed.initialize``:
the machine id comes from the launcher, and every shared-memory name gets a per-run,
per-machine prefix (servers and the trainers of one machine share a prefix, so they still
find each other's segments). Tested against dgl 2.1.0 only: :func:`apply` refuses other
versions rather than patching blindly.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

SUPPORTED_DGL = ("2.1.",)
# (module, function) pairs that take a shared-memory name as their first argument.
_SHM_NAMED = (
    ("kvstore", "empty_shared_mem"),
    ("dist_graph", "empty_shared_mem"),
    ("dist_graph", "exist_shared_mem_array"),
    ("graph_partition_book", "empty_shared_mem"),
    ("graph_partition_book", "exist_shared_mem_array"),
    ("shared_mem_utils", "empty_shared_mem"),
    # The graph structure itself: segments named after the graph (made in C++). The Python
    # segments made inside these two get the prefix twice; harmless, and the same both ways.
    ("dist_graph", "_copy_graph_to_shared_mem"),
    ("dist_graph", "_get_graph_from_shared_mem"),
)


def shm_prefix(run_id: str, machine: int) -> str:
    """Shared-memory name prefix of one machine of one run (also used to clean up)."""
    return f"rudder-{run_id}-m{machine}-"


def prefixed_name(prefix: str, shm_name: str) -> str:
    """``shm_name`` with ``prefix`` after its leading slash (POSIX names have just that one)."""
    if shm_name.startswith("/"):
        return "/" + prefix + shm_name[1:]
    return prefix + shm_name


def _with_prefix(func, prefix: str):
    """``func`` with ``prefix`` put into the shared-memory name it gets first."""

    @functools.wraps(func)
    def prefixed(first, *args, **kwargs):
        # _copy_graph_to_shared_mem(g, graph_name, ...) takes the name second.
        if not isinstance(first, str):
            graph, name, *rest = (first, *args)
            return func(graph, prefixed_name(prefix, name), *rest, **kwargs)
        return func(prefixed_name(prefix, first), *args, **kwargs)

    return prefixed


def apply(machine: int, run_id: str | None = None) -> None:
    """Make this process behave as a process of ``machine`` on a shared host."""
    import dgl
    from dgl.distributed import rpc_client

    if not dgl.__version__.startswith(SUPPORTED_DGL):
        raise RuntimeError(
            f"loopback mode patches dgl {SUPPORTED_DGL[0]}x internals; found dgl {dgl.__version__}."
            " Use the namespace mode (root) or a real cluster instead."
        )
    run_id = run_id or os.environ.get("RUDDER_RUN_ID", "run")
    prefix = shm_prefix(run_id, machine)

    rpc_client.get_local_machine_id = lambda server_namebook: machine
    for module_name, func_name in _SHM_NAMED:
        module = getattr(dgl.distributed, module_name)
        original = getattr(module, func_name)
        original = getattr(original, "__wrapped__", original)  # re-applied: wrap the original
        setattr(module, func_name, _with_prefix(original, prefix))
    log.info("loopback patches applied: machine %d, shared memory prefix %r", machine, prefix)
