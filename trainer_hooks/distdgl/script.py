"""Runs a user's DistDGL training script as one trainer of ``rudder train --script``.

``python -m rudder.trainer_hooks.distdgl.script PATH [ARGS...]``: the script runs as
``__main__`` with ``sys.argv = [PATH, *ARGS]``, in the environment DGL's own launcher would
give it (``DGL_ROLE``, ``DGL_IP_CONFIG``, ``DGL_CONF_PATH``, ``MASTER_ADDR``, ``RANK``, ...)
plus Rudder's (``RUDDER_RUN_CONFIG``, ``RUDDER_AGENT_ENDPOINT``), so
``BufferedFeatures.from_graph`` picks up the run's policy and decider. Before the script runs,
this wrapper does what DistDGL needs on emulated machines and the script cannot know: the
no-root loopback patches and gloo's network interface. A script that fails exits at once
(DGL's exit handler would otherwise wait for the other trainers forever).
"""

from __future__ import annotations

import logging
import os
import runpy
import sys

from rudder.trainer_hooks.distdgl.worker import exit_now


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(
            "usage: python -m rudder.trainer_hooks.distdgl.script PATH [ARGS...]", file=sys.stderr
        )
        return 2
    if os.environ.get("RUDDER_RUN_CONFIG"):  # under `rudder train`
        from rudder.trainer_hooks.distdgl.worker import start_process, start_trainer

        start_trainer(start_process())
    else:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    path = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            exit_now(f"{path} (exit {e.code})", e.code if isinstance(e.code, int) else 1)
    except BaseException:
        exit_now(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
