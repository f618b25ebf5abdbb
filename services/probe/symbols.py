"""Stack addresses -> function names, in user space.

Kernel frames from /proc/kallsyms (sorted once, bisect per address). User
frames through bcc's symbol cache, which reads each process's memory map and
the ELF symbol tables of its binaries through /proc/<pid>/root, so binaries
inside containers resolve without entering their mount namespace. Per-process
caches are bounded in number and freed once the process is gone.
"""
from __future__ import annotations

import bisect
import os
from array import array

from shared.bounded import Bounded

UNKNOWN = "[unknown]"


class KernelSymbols:
    """Function symbols of /proc/kallsyms, read on first use and kept compact
    (~150k symbols: an address array and one string of names, ~5 MB)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        self.path = path
        self.addrs: array | None = None
        self._offsets = array("I")
        self._names = ""

    def _load(self) -> None:
        rows = []
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.split(None, 3)
                    if len(parts) >= 3 and parts[1] in ("t", "T", "w", "W"):
                        a = int(parts[0], 16)
                        if a:
                            rows.append((a, parts[2]))
        except OSError:
            pass
        rows.sort()
        self.addrs = array("Q", (a for a, _ in rows))
        names, off = [], 0
        for _, n in rows:
            self._offsets.append(off)
            names.append(n)
            off += len(n) + 1
        self._offsets.append(off)
        self._names = "\n".join(names) + "\n"

    def name(self, addr: int) -> str:
        if self.addrs is None:
            self._load()
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return UNKNOWN
        return self._names[self._offsets[i]:self._offsets[i + 1] - 1]


class UserSymbols:
    """Per-pid symbol caches (bcc's), at most `max_pids`, least recently used evicted and freed
    (a cache holds the symbol tables of every binary the process maps: MBs for big programs)."""

    def __init__(self, max_pids: int = 64) -> None:
        from bcc import SymbolCache
        from bcc.libbcc import lib
        self._new, self._lib = SymbolCache, lib
        self.max_pids = max_pids
        self._caches: Bounded[int, object] = Bounded(max_pids, self._free)   # evicted ones freed

    def name(self, addr: int, pid: int) -> str:
        cache = self._caches.touch(pid)
        if cache is None:
            cache = self._caches[pid] = self._new(pid)
        try:
            sym, _offset, module = cache.resolve(addr, True)
        except Exception:
            return UNKNOWN
        if sym:
            return sym.decode("utf-8", "replace")
        if module:  # a stripped binary: at least which one
            return "[" + os.path.basename(module.decode("utf-8", "replace")) + "]"
        return UNKNOWN

    def _free(self, pid: int, cache) -> None:
        self._lib.bcc_free_symcache(cache.cache, pid)

    def forget_dead(self) -> None:
        for pid in [p for p in self._caches if not os.path.exists(f"/proc/{p}")]:
            self._free(pid, self._caches.pop(pid))
