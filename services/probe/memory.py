"""Give back what compiling the BPF programs took, once they are loaded.

bcc compiles in-process with clang/LLVM: the libraries' pages it touched
(tens of MB of code) and the heap it freed stay in our RSS for the life of
the probe though nothing runs them again. Their code mappings (r-xp) dropped
with MADV_DONTNEED stay correct (a page used again is read back from the
page cache); read-only data is left alone, since RELRO pages (r--p after
relocation) hold private copies that must not be discarded. malloc_trim
hands free heap back to the kernel.
"""
from __future__ import annotations

import ctypes
import ctypes.util

from shared import log
from shared.heap import trim_heap

_log = log.get("probe.memory")
MADV_DONTNEED = 4
COMPILER_LIBS = ("libLLVM", "libclang", "libbcc")


def release_compiler_memory() -> int:
    """Drop the compiler libraries' resident read-only pages and trim the heap; returns bytes advised."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError as e:
        _log.debug("no libc to trim with: %s", e)
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[1] != "r-xp" or not any(lib in parts[5] for lib in COMPILER_LIBS):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    trim_heap()
    return advised
