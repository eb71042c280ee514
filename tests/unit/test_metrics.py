import numpy as np
import pytest

from rudder.trainer_hooks.metrics import Accounting
from rudder.trainer_hooks.policies.base import Plan


def plan(n_req, n_hits, extra=0, admitted=0, replaced=False):
    slots = np.full(n_req, -1, dtype=np.int32)
    slots[:n_hits] = 0
    n_miss = n_req - n_hits
    fetch = np.arange(n_miss + extra, dtype=np.int64)
    return Plan(
        slots=slots,
        fetch_ids=fetch,
        n_misses=n_miss,
        admit_slots=np.zeros(admitted, np.int32),
        admit_src=np.zeros(admitted, np.int64),
        replaced=replaced,
    )


def test_windowed_and_cumulative_hits_are_floats():
    acct = Accounting(trainer=3, capacity=50, row_bytes=400, total_minibatches=10, window=2)
    m0 = acct.record(plan(10, 1))
    m1 = acct.record(plan(10, 2))
    m2 = acct.record(plan(20, 15))
    assert m0.hit_pct == pytest.approx(10.0)
    assert m1.hit_pct_cumulative == pytest.approx(15.0)
    assert m2.hit_pct_window == pytest.approx(100 * 17 / 30)  # minibatches 1 and 2
    assert m2.hit_pct_cumulative == pytest.approx(100 * 18 / 40)
    assert isinstance(m2.hit_pct_cumulative, float)
    assert (m2.trainer, m2.minibatch, m2.remaining_minibatches) == (3, 2, 7)


def test_replacement_minibatches_count_their_misses_and_their_rows():
    acct = Accounting(trainer=0, capacity=20, row_bytes=400)
    m = acct.record(plan(10, 4, extra=3, admitted=5, replaced=True))
    assert (m.misses, m.extra_rows, m.rows_fetched) == (6, 3, 9)
    assert m.bytes_fetched == 9 * 400
    assert (m.replaced, m.last_replaced, m.last_replaced_pct, m.since_replacement) == (
        5,
        5,
        25.0,
        0,
    )
    m = acct.record(plan(10, 10))
    assert (m.replaced, m.last_replaced, m.since_replacement, m.replacements) == (0, 5, 1, 1)
    t = acct.totals
    assert (t.misses, t.extra_rows, t.rows_fetched, t.rows_replaced) == (6, 3, 9, 5)


def test_no_division_by_zero_before_any_remote_input():
    acct = Accounting(trainer=0, capacity=0, row_bytes=4)
    m = acct.record(plan(0, 0))
    assert (m.hit_pct, m.hit_pct_window, m.hit_pct_cumulative, m.last_replaced_pct) == (0, 0, 0, 0)
    assert acct.totals.hit_rate == 0.0
