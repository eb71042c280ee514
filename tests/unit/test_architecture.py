"""Import rules that keep the architecture as drawn: trainers and the agent meet only through
``rudder.decisions`` and the wire protocol, and the shared vocabulary stays light."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> (the package it installs as, the packages its modules must not import)
RULES = {
    "controller": ("rudder.controller", ("rudder.trainer_hooks", "trainer_hooks")),
    "trainer_hooks": ("rudder.trainer_hooks", ("rudder.controller", "controller")),
}
HEAVY = ("torch", "dgl", "numba")
LIGHT_MODULES = (
    "rudder.decisions",
    "rudder.rules",
    "rudder.metrics_trace",
    "rudder.llm.defaults",
    "rudder.signals",
)


def _package_of(path: Path, folder: str, package: str) -> str:
    """The package a module file belongs to (for resolving its relative imports)."""
    parts = path.relative_to(ROOT / folder).parts[:-1]  # a/b.py and a/__init__.py: in a
    return ".".join((package, *parts))


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of ``package``.

    Relative imports are resolved against ``package``.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule), and a
    constant ``importlib.import_module("x")`` / ``__import__("x")`` yields ``x``.
    """
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, package)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}".lstrip(".")) for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                found.append((node.lineno, arg.value))
    return found


def _forbidden(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("folder", sorted(RULES))
def test_trainers_and_agent_do_not_import_each_other(folder):
    package, banned = RULES[folder]
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    violations = sorted(
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(path.read_text(), _package_of(path, folder, package))
        if _forbidden(module, banned)
    )
    assert not violations, (
        f"{folder}/ must not import {banned[0]} (share code through rudder.decisions or "
        "rudder.protocol instead):\n" + "\n".join(dict.fromkeys(violations))
    )


def test_the_rule_sees_every_form_of_import():
    source = (
        "from ..trainer_hooks import replay\n"
        "from . import graph\n"
        "from .nodes import decide\n"
        "import rudder.trainer_hooks.trace as t\n"
        "def f():\n"
        "    from rudder import trainer_hooks\n"
        "    importlib.import_module('rudder.trainer_hooks.buffer')\n"
    )
    found = imported_modules(source, "rudder.controller")
    assert {m for _, m in found} >= {
        "rudder.trainer_hooks.replay",
        "rudder.controller.graph",
        "rudder.controller.nodes",
        "rudder.trainer_hooks.trace",
        "rudder.trainer_hooks",
        "rudder.trainer_hooks.buffer",
    }
    assert (6, "rudder.trainer_hooks") in found
    assert (
        _package_of(ROOT / "trainer_hooks/distdgl/config.py", "trainer_hooks", "x") == "x.distdgl"
    )


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_shared_vocabulary_imports_nothing_heavy(module):
    code = f"import sys, {module}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", f"importing {module} loads {out.stdout.strip()}"
