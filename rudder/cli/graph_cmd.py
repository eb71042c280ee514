"""``rudder graph``: generate, read and partition graphs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="generate, import and partition graphs")
    p.add_subparsers(dest="graph_command", metavar="SUBCOMMAND", required=True)
