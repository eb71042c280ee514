"""Small helpers shared by subcommands: argument types, tables, progress bars."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class UserError(Exception):
    """A problem the user can fix (bad path, bad value); printed without a traceback."""


def int_list(text: str) -> tuple[int, ...]:
    """Parse ``10,25`` into ``(10, 25)``."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _number(text: str, cast: type, ok, what: str):
    try:
        v = cast(text)
    except ValueError:
        v = None
    if v is None or not ok(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def positive_float(text: str) -> float:
    """A number > 0 (seconds, scales); ``nan`` is refused."""
    return _number(text, float, lambda v: v > 0, "a positive number")


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    return _number(text, int, lambda v: 1 <= v <= 65535, "a port number (1-65535)")


def add_graph_shape_args(p: argparse.ArgumentParser) -> None:
    """The generated graph's shape: --nodes, --avg-degree, --communities, --mixing."""
    p.add_argument("--nodes", type=positive_int, default=200_000)
    p.add_argument("--avg-degree", type=float, default=15.0, help="mean number of neighbours")
    p.add_argument("--communities", type=positive_int, default=64)
    p.add_argument(
        "--mixing", type=fraction, default=0.2, help="fraction of edges leaving their community"
    )


def add_fill_free_arg(p: argparse.ArgumentParser) -> None:
    """--no-fill-free: the paper's buffer, which stays empty until the decider's first replace."""
    p.add_argument(
        "--no-fill-free",
        dest="fill_free",
        action="store_false",
        help="scored policies: leave free slots empty until a replacement round (the paper's "
        "behaviour); by default they take the misses being pulled anyway, at no extra cost",
    )
    p.add_argument(
        "--no-admission",
        dest="admission",
        action="store_false",
        help="rudder: swap entries only in replacement rounds; by default a miss used more "
        "(long-run) than the weakest entry takes its slot between rounds (docs/policies.md)",
    )


def graph_spec_from(args: argparse.Namespace):
    """The :class:`GraphSpec` of :func:`add_graph_shape_args` (plus ``--seed``)."""
    from rudder.graphs.synthetic import GraphSpec

    return GraphSpec(
        nodes=args.nodes,
        avg_degree=args.avg_degree,
        communities=args.communities,
        mixing=args.mixing,
        seed=args.seed,
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_num(r[i]) for r in rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def progress(total: int | None, desc: str, unit: str = "mb", unit_scale: bool = False):
    """A tqdm progress bar on stderr, hidden when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        file=sys.stderr,
        disable=None,
        leave=False,
    )
