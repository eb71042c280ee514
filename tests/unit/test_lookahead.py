import threading
import time

import pytest

from rudder.trainer_hooks.lookahead import LookAhead


def test_yields_everything_in_order_one_ahead():
    produced = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    with LookAhead(items()) as la:
        first = next(la)
        time.sleep(0.2)
        # The producer prepared the next item and waits on the bounded queue for the one after.
        assert first == 0 and produced[:2] == [0, 1] and len(produced) <= 3
        assert [first, *la] == [0, 1, 2, 3, 4]
        with pytest.raises(StopIteration):
            next(la)


def test_producer_errors_reach_the_consumer():
    def items():
        yield 1
        raise RuntimeError("sampling failed")

    la = LookAhead(items())
    assert next(la) == 1
    with pytest.raises(RuntimeError, match="sampling failed"):
        next(la)
    la.close()


def test_close_stops_an_endless_producer():
    def forever():
        i = 0
        while True:
            yield i
            i += 1

    la = LookAhead(forever())
    next(la)
    la.close(timeout_s=5)
    assert not any(t.name == "rudder-lookahead" and t.is_alive() for t in threading.enumerate())
