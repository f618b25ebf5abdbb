"""The collector's tuning (shared/gc_tuning.py): what a started service holds is frozen, the cycles
its start left are collected first, and a later start collects the cycles frozen before it."""
from __future__ import annotations

import gc
import weakref

import pytest

from shared.gc_tuning import GEN0_THRESHOLD, settle_gc, tune_gc


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def restore_gc():
    """No automatic collection during a test: only the ones it makes decide what is freed."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def cycle() -> weakref.ref:
    n = Node()
    ref = weakref.ref(n)
    del n
    return ref


def test_settle_collects_start_garbage_then_freezes_the_rest(restore_gc):
    garbage = cycle()
    kept = Node()
    settle_gc()
    assert garbage() is None, "a cycle left by the start is collected before the freeze"
    assert gc.get_freeze_count() > 0
    assert kept.me is kept, "what is frozen stays usable"
    young = cycle()
    gc.collect()  # a full collection does not look at frozen objects, but sees new ones
    assert young() is None


def test_a_later_settle_collects_cycles_frozen_by_an_earlier_one(restore_gc):
    # a service that stopped: its objects were frozen at its start and are cycles now
    n = Node()
    ref = weakref.ref(n)
    settle_gc()
    del n
    gc.collect()
    assert ref() is not None, "frozen: full collections leave it"
    settle_gc()
    assert ref() is None, "unfrozen and collected at the next start"


def test_tune_gc_widens_the_first_generation(restore_gc):
    tune_gc()
    assert gc.get_threshold()[0] == GEN0_THRESHOLD > 700
