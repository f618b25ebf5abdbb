"""shared/bounded.py: the one LRU-bounded mapping (set refreshes, over maxlen the oldest goes)."""
import copy
import pickle

import pytest

from shared.bounded import Bounded


def test_set_refreshes_and_evicts_oldest():
    d = Bounded(3)
    for k in "abc":
        d[k] = k.upper()
    d["a"] = "A2"                     # a set of an existing key makes it the newest
    d["d"] = "D"
    assert list(d.items()) == [("c", "C"), ("a", "A2"), ("d", "D")]
    assert d.evictions == 1 and len(d) == 3


def test_reads_do_not_refresh_touch_does():
    d = Bounded(2)
    d["a"], d["b"] = 1, 2
    assert d.get("a") == 1 and d["a"] == 1 and "a" in d
    d["c"] = 3
    assert list(d) == ["b", "c"]      # a was read, not used: evicted
    assert d.touch("b") == 2
    d["d"] = 4
    assert list(d) == ["b", "d"]      # b was touched: c went
    assert d.touch("zz") is None and "zz" not in d


def test_on_evict_gets_each_dropped_entry_after_it_is_out():
    seen = []
    d: Bounded[int, str] = Bounded(2, lambda k, v: seen.append((k, v, k in d, len(d))))
    for i in range(5):
        d[i] = str(i)
    assert seen == [(0, "0", False, 2), (1, "1", False, 2), (2, "2", False, 2)]
    assert d.evictions == 3


def test_pop_del_clear_are_not_evictions():
    seen = []
    d = Bounded(2, lambda k, v: seen.append(k))
    d["a"], d["b"] = 1, 2
    assert d.pop("a") == 1 and d.pop("zz", None) is None
    del d["b"]
    d["c"] = 3
    d.clear()
    assert seen == [] and d.evictions == 0 and len(d) == 0


def test_setdefault_and_update_are_bounded():
    d = Bounded(2)
    d.update({"a": 1, "b": 2, "c": 3})
    assert list(d) == ["b", "c"]
    assert d.setdefault("b", 9) == 2 and list(d) == ["b", "c"]   # present: no refresh, like get
    assert d.setdefault("e", 5) == 5 and list(d) == ["c", "e"]
    assert d.evictions == 2


def test_zero_bound_keeps_nothing():
    dropped = []
    d = Bounded(0, lambda k, v: dropped.append(k))
    d["a"] = 1
    assert len(d) == 0 and dropped == ["a"] and d.evictions == 1


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ({}, TypeError)])
def test_bad_bound_refused(bad, exc):
    with pytest.raises(exc):
        Bounded(bad)


def test_copy_and_pickle_keep_the_bound():
    d = Bounded(2)
    d["a"], d["b"] = 1, 2
    for c in (d.copy(), copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert isinstance(c, Bounded) and c.maxlen == 2 and list(c.items()) == [("a", 1), ("b", 2)]
        c["c"] = 3
        assert list(c) == ["b", "c"]
    assert list(d) == ["a", "b"]


def test_nested_tables_count_what_the_outer_drops():
    """The names.py / alerter state.py shape: an LRU of per-scope LRUs, an evicted scope counts its entries."""
    n = {"evicted": 0}

    def inner():
        return Bounded(2, lambda k, v: n.__setitem__("evicted", n["evicted"] + 1))

    outer = Bounded(2, lambda k, t: n.__setitem__("evicted", n["evicted"] + len(t)))
    for scope, keys in (("s1", "abc"), ("s2", "x"), ("s1", "d"), ("s3", "yz")):
        t = outer.touch(scope)
        if t is None:
            t = outer[scope] = inner()
        for k in keys:
            t[k] = True
    # s1 kept 2 of a,b,c (1 evicted) then d (another); s3's arrival dropped s2 (1 entry)
    assert list(outer) == ["s1", "s3"] and list(outer["s1"]) == ["c", "d"]
    assert n["evicted"] == 3
