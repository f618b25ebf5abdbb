"""shared/heap.keep_trimmed on this process's real heap: what a thread freed after a burst goes
back to the kernel once the process has grown, and a process that has not grown is left alone."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

from shared.heap import ARENA_MAX, keep_trimmed, rss_bytes


def _burst_in_a_thread(keep: list) -> None:
    """~80 MB of malloc'd blocks in a thread's arena, then all freed but every 50th (holes the
    arena's top cannot shrink past)."""
    def work() -> None:
        blocks = [bytes(2048) + bytes([i % 251]) for i in range(40_000)]
        keep.extend(blocks[::50])
        del blocks
    t = threading.Thread(target=work)
    t.start()
    t.join()


async def test_a_grown_process_gives_freed_heap_back_and_an_idle_one_is_left_alone():
    stop = asyncio.Event()
    idle = asyncio.create_task(keep_trimmed(stop, every_s=0.05, grown=8 << 20))
    await asyncio.sleep(0.3)
    stop.set()
    assert await idle == 0                      # nothing grew: no trim

    keep: list[bytes] = []
    stop = asyncio.Event()
    trimmer = asyncio.create_task(keep_trimmed(stop, every_s=0.2, grown=8 << 20))
    await asyncio.sleep(0)                      # its floor: the RSS before the burst
    before = rss_bytes()
    _burst_in_a_thread(keep)
    grown = rss_bytes()
    assert grown - before > 40 << 20, (before, grown)     # the freed blocks still count
    await asyncio.sleep(1.0)
    stop.set()
    assert await trimmer >= 1
    after = rss_bytes()
    assert after - before < (grown - before) / 2, (before, grown, after)
    assert len(keep) == 800



async def test_what_a_burst_frees_after_its_trim_goes_back_at_a_settling_trim():
    """The burst's memory is still held at the trim its growth brings (as the alerter holds recent
    execs for its late window), and freed later without the RSS growing again: a settling trim
    gives it back. Then, with nothing more to free, trimming stops."""
    held: list[bytes] = []
    stop = asyncio.Event()
    trimmer = asyncio.create_task(keep_trimmed(stop, every_s=0.1, grown=8 << 20, settle_s=1.0))
    await asyncio.sleep(0)                      # its floor: the RSS before the burst
    before = rss_bytes()

    def burst() -> None:
        held.extend(bytes(2048) + bytes([i % 251]) for i in range(40_000))
    t = threading.Thread(target=burst)
    t.start()
    t.join()
    await asyncio.sleep(0.4)                    # the growth's trim: everything still held
    grown = rss_bytes()
    assert grown - before > 40 << 20, (before, grown)
    kept = held[::50]                           # freed, but every 50th: holes the top cannot shrink past
    held.clear()
    await asyncio.sleep(0.2)
    assert rss_bytes() - before > 40 << 20      # freed to malloc, still in the RSS
    await asyncio.sleep(1.5)
    after = rss_bytes()
    assert after - before < (grown - before) / 2, (before, grown, after)
    await asyncio.sleep(2.5)                    # nothing more to free: no trim after the settled one
    stop.set()
    n = await trimmer
    assert 2 <= n <= 4, n
    assert len(kept) == 800


ARENAS = r"""
import ctypes, re, sys, tempfile, threading
from shared.heap import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
go = threading.Barrier(6)
def work():
    go.wait()  # all at once: each contends for an arena
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile() as f:
    fp = libc.fopen(f.name.encode(), b"w"); libc.malloc_info(0, fp); libc.fclose(fp)
    print(len(re.findall(r'<heap nr="\d+"', open(f.name).read())))
"""


def test_tuned_malloc_caps_the_arenas_threads_spread_over():
    """tune_malloc (run by every service's main before its threads start): six busy threads share
    ARENA_MAX arenas, where glibc alone gives them more (each keeping what its thread freed)."""
    root = Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    arenas = {mode: int(subprocess.run([sys.executable, "-c", ARENAS, mode], cwd=root, env=env, capture_output=True,
                                       text=True, check=True).stdout) for mode in ("plain", "tuned")}
    assert arenas["tuned"] <= ARENA_MAX < arenas["plain"], arenas
