"""Python's cyclic garbage collector, tuned for a stream of short-lived objects.

Events are trees of dicts and lists freed by reference counting as soon as a batch is done; the
cyclic collector only has to find the rare cycles (tasks, futures, tracebacks). With CPython's
defaults it ran a collection every 700 allocations, promoted each in-flight batch to older
generations, and every so often walked every object of the process (the rules, bcc's and
aiohttp's modules, the process tables): on `eunomia up` during a burst of 3,000 execs that was
~0.15 s of its ~1.2 s of CPU, with full collections pausing the event loop 60-100 ms.

So: a larger first generation (tune_gc, at process start) and, once a service has started, what
it holds for good moved out of the collector's sight (settle_gc: gc.freeze)."""
from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000   # allocations between young collections (CPython's default: 700)
GEN1_THRESHOLD = 10       # young collections between middle ones (as CPython's)
GEN2_THRESHOLD = 10       # middle collections between full ones (as CPython's)


def tune_gc() -> None:
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


def settle_gc() -> None:
    """After a service has started: collect what its start left as cyclic garbage, then freeze the
    rest (never walked again; still freed by reference counting). Called again after each later
    start: what was frozen before is unfrozen first, so a stopped service's cycles are collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
