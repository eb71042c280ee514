"""The capped exponential backoff shared by the agent client and the sidecar launcher."""

import pytest

from rudder.retry import capped_backoff


def test_the_wait_doubles_from_initial_up_to_the_cap():
    assert [capped_backoff(a, 0.1, 5.0) for a in range(8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )


def test_a_huge_attempt_count_stays_at_the_cap():
    assert capped_backoff(10**6, 0.1, 5.0) == 5.0  # no float overflow however long it failed


def test_zero_initial_wait_retries_at_once():
    assert capped_backoff(3, 0.0, 1.0) == 0.0


@pytest.mark.parametrize(("attempt", "initial", "cap"), [(-1, 0.1, 1.0), (0, -0.1, 1.0), (0, 2, 1)])
def test_bad_settings_are_refused(attempt, initial, cap):
    with pytest.raises(ValueError, match="backoff"):
        capped_backoff(attempt, initial, cap)
