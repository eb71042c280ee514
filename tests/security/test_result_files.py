"""Result files on an output directory that is read-only or full: a clear error, never a
traceback, an empty file or a partial one.

The probe: a read-only or full ``--out`` ended in a traceback and left ``summary.json`` and
``rank-*.json`` at 0 bytes. Real read-only and full file systems are small tmpfs mounts
(root); the rest fakes the failing write.
"""

import contextlib
import errno
import json
import os
import subprocess
import sys

import pytest

from rudder.files import OutputError, atomic_write_text, check_output_dir
from rudder.launcher.summary import write_summary

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
RUDDER = [sys.executable, "-m", "rudder"]


@contextlib.contextmanager
def tmpfs(path, size: str = "64k", *options: str):
    path.mkdir()
    opts = ",".join([f"size={size}", "mode=0755", *options])
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "rudder-test", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(d) -> None:
    with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"ok": true}\n')

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*summary.json: No space left on device"):
        write_summary(tmp_path, {"ok": True, "run_id": "new"})
    assert target.read_text() == '{"ok": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_write_replaces_the_file_whole(tmp_path):
    atomic_write_text(tmp_path / "a.json", "x" * 100_000)
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert (tmp_path / "a.json").read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@as_root
def test_a_full_disk_is_a_clear_error_and_no_empty_file(tmp_path):
    with tmpfs(tmp_path / "out") as out:
        (out / "trainers").mkdir()
        _fill(out)
        with pytest.raises(OutputError, match="No space left on device"):
            atomic_write_text(out / "trainers" / "rank-0.json", json.dumps({"rank": 0}))
        with pytest.raises(OutputError, match="No space left on device"):
            write_summary(out, {"ok": False})
        with pytest.raises(OutputError, match="No space left on device"):
            check_output_dir(out)
        leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert leftovers == ["filler", "trainers"]  # no summary.json, no rank-0.json, no .tmp


@as_root
def test_a_nearly_full_disk_is_refused_before_the_run(tmp_path):
    with (
        tmpfs(tmp_path / "out", "8m") as out,
        pytest.raises(OutputError, match=r"MiB free; a run needs at least 16 MiB"),
    ):
        check_output_dir(out)


@as_root
def test_rudder_train_on_a_read_only_out_fails_before_anything_starts(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", "ro") as ro:
        out = subprocess.run(
            [*RUDDER, "train", "--partitions", str(tmp_path / "none"), "--out", str(ro / "run")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 2
    assert "cannot write to the output directory" in out.stderr
    assert "Read-only file system" in out.stderr and "Traceback" not in out.stderr


def test_a_trainer_that_cannot_write_its_results_says_so_without_a_traceback():
    code = (
        "from rudder.files import OutputError\n"
        "from rudder.trainer_hooks.distdgl.worker import exit_now\n"
        "try:\n"
        "    raise OutputError('cannot write out/trainers/rank-0.json: No space left on device')\n"
        "except OutputError:\n"
        "    exit_now('trainer')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "trainer failed: cannot write out/trainers/rank-0.json: No space" in out.stderr
    assert "Traceback" not in out.stderr
