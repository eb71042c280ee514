"""``rudder llm``: the embedded Ollama-compatible LLM server."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="serve a local LLM behind the Ollama HTTP API")
    p.add_subparsers(dest="llm_command", metavar="SUBCOMMAND", required=True)
