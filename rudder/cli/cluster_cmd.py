"""``rudder cluster``: turn a scheduler's allocation into what ``rudder train`` reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rudder.cli.common import port_number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="cluster set-up helpers (an ip_config from a SLURM allocation)",
        description="Helpers for real clusters; docs/cluster.md, 'SLURM'.",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    ip = csub.add_parser(
        "ip-config",
        help="write a DGL ip_config for the current allocation",
        description="One 'IP PORT' line per allocated node, in allocation order: the node "
        "list ($SLURM_JOB_NODELIST, or --nodelist) expanded by `scontrol show hostnames`, "
        "each name resolved to its IPv4 address here. Pass the file to `rudder train "
        "--ip-config`.",
    )
    src = ip.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-slurm", action="store_true", help="the SLURM allocation this runs in")
    ip.add_argument("--nodelist", help="a SLURM node list instead of $SLURM_JOB_NODELIST")
    ip.add_argument("--port", type=port_number, default=30050, help="DGL server port")
    ip.add_argument("--scontrol", default="scontrol", help="the scontrol command")
    ip.add_argument("--out", type=Path, help="write here instead of standard output")
    ip.set_defaults(func=run_ip_config)


def run_ip_config(args: argparse.Namespace) -> int:
    from rudder.launcher.slurm import ip_config_text, slurm_nodes

    nodes = slurm_nodes(nodelist=args.nodelist, scontrol=args.scontrol)
    text = ip_config_text(nodes, args.port)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    for n in nodes:
        print(f"{n.host} -> {n.ip}", file=sys.stderr)
    print(f"wrote {args.out} ({len(nodes)} machines)", file=sys.stderr)
    return 0
