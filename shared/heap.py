"""Handing freed heap back to the kernel.

glibc keeps what a thread frees in that thread's arena, mapped and counted in RSS, until
malloc_trim: after one-off peaks (compiling the BPF programs) the services call trim_heap() so
the stack returns near its idle size (the store's zstd dictionary is trained in a child process,
shared/background.py). After a burst of events the same holds for what the threads freed (bus
batches, SQLite pages, decoded events): each process keeps trimming when it has grown
(keep_trimmed)."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from typing import Any

_libc = None


def _glibc_call(name: str) -> Any:
    """libc's function `name` (loaded once), or None where there is none (not glibc)."""
    global _libc
    try:
        _libc = _libc or ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(_libc, name, None)


def trim_heap() -> None:
    """malloc_trim(0) on every arena (glibc only; nothing elsewhere)."""
    trim = _glibc_call("malloc_trim")
    if trim is not None:
        trim(0)


# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
ARENA_MAX = 2               # the loop's thread and the rest (bcc, SQLite, executors) share one
# The mmap threshold is fixed (glibc raises its own after big frees, up to 32 MiB, and keeps what
# it freed), at 4 MiB: decoding a bus message allocates a few times its size, and at 128 KiB every
# decode mapped, faulted in and unmapped its buffers (orjson.loads of enriched batches ran at ~2/3
# of the speed). The heap top is trimmed past 128 KiB.
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 128 << 10


def tune_malloc() -> bool:
    """Before threads start: fewer glibc arenas (each thread's freed memory otherwise stays in its
    own), allocations over 4 MiB mapped and unmapped on their own, and the heap top trimmed past
    128 KiB (keep_trimmed returns the rest after a burst). Measured on `eunomia up` (with 128 KiB
    thresholds then): ~9 MB less idle, ~5 MB less after a burst of execs. $MALLOC_ARENA_MAX, when
    set, is left to glibc. False where mallopt is missing (not glibc)."""
    mallopt = _glibc_call("mallopt")
    if mallopt is None:
        return False
    wanted = [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    if "MALLOC_ARENA_MAX" not in os.environ:  # an operator's own setting stands
        wanted.append((M_ARENA_MAX, ARENA_MAX))
    return all(mallopt(p, v) == 1 for p, v in wanted)


TRIM_EVERY_S = 15.0
TRIM_GROWN = 8 << 20        # bytes of RSS over what the last trim left that make the next one worth it
RETRIM_S = 30.0             # while RSS stays that much over its lowest, trimmed again this often


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


async def keep_trimmed(stop: asyncio.Event, every_s: float = TRIM_EVERY_S, grown: int = TRIM_GROWN,
                       settle_s: float = RETRIM_S) -> int:
    """Until `stop`: every `every_s`, trim the heap if RSS has grown by `grown` since the last trim
    (a burst's freed memory goes back; a steady process is left alone). What a burst leaves held
    for a while (the alerter's late window, the enricher's exited processes) is freed after that
    trim, without the RSS growing again: so while the RSS stays `grown` over the lowest a trim has
    left, the heap is trimmed again every `settle_s`, until a trim frees little (that level is
    then the process's own). Returns the trims made."""
    floor = low = rss_bytes()
    trims, last = 0, time.monotonic()
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return trims
        except asyncio.TimeoutError:
            pass
        rss = rss_bytes()
        grew = rss > floor + grown
        if grew or rss > low + grown and time.monotonic() - last >= settle_s:
            await asyncio.to_thread(trim_heap)
            floor, trims, last = rss_bytes(), trims + 1, time.monotonic()
            # a settling trim that freed little: this level is the process's own now
            low = floor if not grew and rss - floor < grown // 8 else min(low, floor)
