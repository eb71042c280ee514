"""Entry point of the launcher's processes: ``python -m rudder.trainer_hooks.distdgl.worker``.

The role comes from DGL's own variable ``DGL_ROLE`` (``server`` or ``client``), the run from
``RUDDER_RUN_CONFIG`` (a :class:`WorkerConfig` json), the trainer's global rank from
``RUDDER_RANK``. A server runs DistDGL's graph/KV server until every trainer has finished; a
trainer trains and writes its results under the run directory.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from rudder.files import OutputError

if TYPE_CHECKING:
    from rudder.trainer_hooks.distdgl.config import WorkerConfig

log = logging.getLogger("rudder.worker")


def machine_interface(ip_config: str, machine: int) -> str:
    """The network interface holding this machine's address in DGL's ip_config.

    gloo must be told which interface to use (``GLOO_SOCKET_IFNAME``); otherwise it resolves
    the host name, which inside an emulated machine points nowhere useful.
    """
    import psutil

    with open(ip_config) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    ip = lines[machine][0]
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == ip for a in addrs):
            return name
    raise RuntimeError(f"no local interface holds {ip} (machine {machine} in {ip_config})")


def start_process() -> WorkerConfig:
    """Logging, the run's config and, on loopback, DGL's patches: what every process needs."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [{os.environ.get('RUDDER_PROCESS', '?')}] %(name)s: "
        "%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    from rudder.trainer_hooks.distdgl.config import WorkerConfig

    cfg = WorkerConfig.load(os.environ["RUDDER_RUN_CONFIG"])
    if cfg.loopback:
        from rudder.trainer_hooks.distdgl import loopback

        loopback.apply(int(os.environ["RUDDER_MACHINE"]), os.environ.get("RUDDER_RUN_ID"))
    return cfg


def start_trainer(cfg: WorkerConfig) -> None:
    """What a trainer needs beyond :func:`start_process`: gloo's network interface."""
    os.environ.setdefault(
        "GLOO_SOCKET_IFNAME", machine_interface(cfg.ip_config, int(os.environ["RUDDER_MACHINE"]))
    )


def exit_now(what: str, code: int = 1) -> NoReturn:
    """Log the failure and leave at once.

    DGL's exit handler waits for every other client; after a failure it would hang for ever.
    The launcher sees the exit code and stops the run.
    """
    err = sys.exc_info()[1]
    if isinstance(err, OutputError):  # the user's to fix (full or read-only --out): no traceback
        log.error("%s failed: %s", what, err)
    else:
        log.exception("%s failed", what)
    logging.shutdown()
    os._exit(code)


def main() -> int:
    cfg = start_process()
    if os.environ.get("DGL_ROLE") == "server":
        import dgl
        import torch

        torch.set_num_threads(1)
        dgl.seed(cfg.options.seed)
        dgl.distributed.initialize(cfg.ip_config)  # serves until all trainers exit, then exits
        return 0
    from rudder.trainer_hooks.distdgl.trainer import train

    start_trainer(cfg)
    try:
        train(cfg, rank=int(os.environ["RUDDER_RANK"]))
    except BaseException:
        exit_now("trainer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
