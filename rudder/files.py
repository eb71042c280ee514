"""Result files written whole or not at all, and output directories checked before a run.

A run's results (``summary.json``, ``trainers/rank-R.json``, ...) are written to a temporary
name in the same directory, flushed to disk and renamed over the target, so a reader (or a
crash, or a full disk) never leaves half a file or an empty one. Any failure to write is an
:class:`OutputError` that names the file and the reason, with no traceback for the user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# A run's own result files are small (a 2-machine run: ~100 KB; traces are extra): below
# this much free space, a run would end in a full disk, so it does not start.
MIN_FREE_BYTES = 16 * 2**20


class OutputError(ValueError):
    """A result file or output directory that cannot be written.

    A ValueError, so the CLI prints the message alone, as for any other mistake the user can fix.
    """


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all; OutputError if that fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()  # never leave a partial temporary behind
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def output_errors(what: str) -> Iterator[None]:
    """Turn an OSError inside the block into an OutputError about ``what``."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) not in what else ""
        raise OutputError(f"cannot write {what}: {_reason(e)}{where}") from None


def check_output_dir(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``path`` if needed and prove it writable, before any work goes into a run.

    Creates and removes a probe file (a read-only file system, missing permissions or a full
    disk show up here, not after training), then checks the free space. OutputError if not.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".rudder-probe-", dir=path)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to the output directory {path}: {_reason(e)}") from None
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise OutputError(
            f"the output directory {path} has {free / 2**20:.1f} MiB free; a run needs at "
            f"least {min_free_bytes / 2**20:.0f} MiB for its results (choose another --out)"
        )
    return path
