"""SIGTERM to any ``rudder`` command runs the cleanup Ctrl-C runs, then exits 130."""

from __future__ import annotations

import os
import signal
import time

import pytest

import rudder.cli.models_cmd as models_cmd
from rudder.cli.main import main
from rudder.signals import signal_name, sigterm_as_keyboard_interrupt


def test_sigterm_runs_the_commands_cleanup_and_exits_130(monkeypatch, capsys):
    cleaned: list[str] = []

    def busy_command(args) -> int:  # stands in for e.g. `prompt eval` holding a server
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        finally:
            cleaned.append("server stopped")

    monkeypatch.setattr(models_cmd, "run_list", busy_command)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert main(["models", "list"]) == 130
    assert time.monotonic() - t0 < 4  # interrupted, not slept through
    assert cleaned == ["server stopped"]
    assert "interrupted (received SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_outside_the_block_sigterm_is_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_keyboard_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(KeyboardInterrupt, match="received SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_names():
    assert signal_name(15) == "SIGTERM"
    assert signal_name(99) == "signal 99"
