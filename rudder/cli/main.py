"""``rudder``: one command, one subcommand per job.

Each subcommand module exposes ``register(subparsers)`` and sets ``func`` on its parser; the
heavy imports (numba, torch, dgl) happen inside ``func``, so ``rudder --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rudder import __version__
from rudder.cli import (
    agent_cmd,
    bench_cmd,
    classifier_cmd,
    cluster_cmd,
    graph_cmd,
    llm_cmd,
    models_cmd,
    prompt_cmd,
    replay_cmd,
    trace_cmd,
    train_cmd,
)
from rudder.cli.common import UserError
from rudder.signals import sigterm_as_keyboard_interrupt

log = logging.getLogger("rudder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rudder",
        description="Steer persistent-buffer prefetching in distributed GNN training.",
    )
    parser.add_argument("--version", action="version", version=f"rudder {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    graph_cmd.register(sub)
    train_cmd.register(sub)
    cluster_cmd.register(sub)
    llm_cmd.register(sub)
    models_cmd.register(sub)
    trace_cmd.register(sub)
    replay_cmd.register(sub)
    agent_cmd.register(sub)
    classifier_cmd.register(sub)
    prompt_cmd.register(sub)
    bench_cmd.register(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if verbose < 2:
        logging.getLogger("numba").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        # SIGTERM (scancel, kill, docker stop) cleans up as Ctrl-C does: an embedded LLM
        # server, sidecars and cluster processes started by a command are stopped.
        with sigterm_as_keyboard_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        print(f"rudder: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as e:
        # Library code raises ValueError (and TraceError, a ValueError) with a message meant
        # for the user; anything else is a bug and keeps its traceback.
        if args.verbose > 1:
            log.exception("failed")
        print(f"rudder {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
