"""Handing freed heap back to the kernel.

glibc keeps what a thread frees in that thread's arena, mapped and counted in RSS, until
malloc_trim: after one-off peaks (compiling the BPF programs, training a zstd dictionary)
the services call trim_heap() so the stack returns near its idle size."""
from __future__ import annotations

import ctypes
import ctypes.util

_libc = None


def trim_heap() -> None:
    """malloc_trim(0) on every arena (glibc only; nothing elsewhere)."""
    global _libc
    try:
        _libc = _libc or ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
