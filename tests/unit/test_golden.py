"""Golden replay: a small checked-in trace and the exact results every policy gave on it.

A change here means some policy now behaves differently. If that was intended, run
tests/fixtures/golden/regenerate.py and review the JSON diff like code.
"""

import json
import sys
from pathlib import Path

import pytest

from rudder.trainer_hooks.trace import load_trace

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"
sys.path.insert(0, str(GOLDEN))
from regenerate import golden_results  # noqa: E402


@pytest.fixture(scope="module")
def expected():
    return json.loads((GOLDEN / "replay.json").read_text())


def test_golden_replay_is_unchanged(expected):
    got = golden_results(load_trace(GOLDEN / "trace-rank-0.npz"))
    assert got.keys() == expected.keys()
    for key in expected:
        for g, e in zip(got[key]["policies"], expected[key]["policies"], strict=True):
            assert g == e, key
        assert got[key]["rudder_trajectory"] == expected[key]["rudder_trajectory"], key
