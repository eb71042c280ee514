"""The example with Rudder differs from the plain DistDGL script by a few marked lines only."""

import ast
import difflib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLAIN = EXAMPLES / "node_classification_plain.py"
RUDDER = EXAMPLES / "node_classification.py"
MAX_CHANGED = 6


def _changes():
    plain = PLAIN.read_text().splitlines()
    rudder = RUDDER.read_text().splitlines()
    diff = list(difflib.unified_diff(plain, rudder, lineterm="", n=0))
    body = [d for d in diff if not d.startswith(("---", "+++", "@@"))]
    added = [d[1:] for d in body if d.startswith("+")]
    removed = [d[1:] for d in body if d.startswith("-")]
    return added, removed


def test_few_lines_change():
    added, removed = _changes()
    assert added, "the Rudder example adds nothing to the plain script"
    assert len(added) + len(removed) <= MAX_CHANGED, (added, removed)


def test_every_added_line_is_marked():
    added, _ = _changes()
    unmarked = [line for line in added if not line.rstrip().endswith("# Rudder")]
    assert unmarked == []


def test_the_plain_script_has_no_rudder():
    tree = ast.parse(PLAIN.read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not [m for m in imported if "rudder" in m], imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "BufferedFeatures" not in names
    _, removed = _changes()
    assert all("Rudder" not in line for line in removed)


def test_the_rudder_lines_use_the_public_hook():
    added, _ = _changes()
    text = "\n".join(added)
    assert "BufferedFeatures" in text and ".close()" in text


@pytest.mark.parametrize("path", [PLAIN, RUDDER], ids=lambda p: p.name)
def test_both_files_compile(path):
    code = compile(path.read_text(), str(path), "exec")
    assert "run" in code.co_names and "main" in code.co_names
