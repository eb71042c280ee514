"""The shared argument types: every bad value is a clear argparse error, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from rudder.cli.common import positive_float, positive_int


@pytest.mark.parametrize(("text", "value"), [("2", 2.0), ("0.25", 0.25), ("1e-3", 0.001)])
def test_positive_float_accepts_numbers_above_zero(text, value):
    assert positive_float(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "nan", "hot", ""])
def test_positive_float_refuses_with_the_value_named(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"a positive number, got {text!r}"):
        positive_float(text)


def test_positive_float_error_reaches_the_user_through_argparse(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--timeout", type=positive_float)
    with pytest.raises(SystemExit):
        p.parse_args(["--timeout", "-5"])
    assert "expected a positive number, got '-5'" in capsys.readouterr().err


def test_positive_int_still_refuses_zero():
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("0")


def test_train_refuses_a_learning_rate_that_is_not_positive(capsys):
    from rudder.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--partitions", "p", "--lr", "-0.01"])
    assert "--lr: expected a positive number, got '-0.01'" in capsys.readouterr().err
