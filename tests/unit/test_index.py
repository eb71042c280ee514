import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rudder.trainer_hooks import index as idx


def test_table_size_is_power_of_two_at_half_load():
    for n in (0, 1, 7, 8, 100, 1000):
        size = idx.table_size(n)
        assert size & (size - 1) == 0
        assert size >= 2 * n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=200))
def test_matches_a_dict_under_inserts_and_removes(ops):
    # Few distinct keys in a tiny table: long probe runs, wrap-around and backward shifts.
    capacity = 41
    keys = np.full(capacity, -1, dtype=np.int64)
    table = idx.new_table(capacity)
    free = list(range(capacity))
    model: dict[int, int] = {}
    for insert, key in ops:
        if insert and key not in model:
            pos = free.pop()
            keys[pos] = key
            idx.insert(table, keys, key, pos)
            model[key] = pos
        elif not insert and key in model:
            assert idx.remove(table, keys, key) == model[key]
            free.append(model.pop(key))
        for k in range(41):
            assert idx.find(table, keys, k) == model.get(k, -1)


def test_find_many_and_rebuild():
    keys = np.array([10, 2**40, 7, -5 + 2**62], dtype=np.int64)
    table = idx.new_table(keys.shape[0])
    idx.rebuild(table, keys, keys.shape[0])
    out = np.empty(6, dtype=np.int32)
    idx.find_many(table, keys, np.array([7, 10, 11, 2**40, 0, -5 + 2**62], dtype=np.int64), out)
    assert out.tolist() == [2, 0, -1, 1, -1, 3]
