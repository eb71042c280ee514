"""``rudder train``: distributed training with the Rudder hook."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("train", help="run DistDGL training with a buffer policy")
