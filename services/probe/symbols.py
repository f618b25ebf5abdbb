"""Stack addresses -> function names, in user space.

Kernel frames from /proc/kallsyms (sorted once, bisect per address). User
frames through bcc's symboliser, which reads each process's memory map and
the ELF symbol tables of its binaries through /proc/<pid>/root, so binaries
inside containers resolve without entering their mount namespace. Per-process
caches are dropped once the process is gone.
"""
from __future__ import annotations

import bisect
import os
from array import array

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
    """Per-pid symbol caches (bcc); forget() frees those of dead processes."""

    def __init__(self) -> None:
        from bcc import BPF
        self._bpf = BPF
        self.pids: set[int] = set()

    def name(self, addr: int, pid: int) -> str:
        self.pids.add(pid)
        try:
            sym = self._bpf.sym(addr, pid, show_module=False, demangle=True)
        except Exception:
            return UNKNOWN
        if not sym or sym == b"[unknown]":
            return UNKNOWN
        return sym.decode("utf-8", "replace")

    def forget_dead(self) -> None:
        caches = getattr(self._bpf, "_sym_caches", {})
        for pid in list(self.pids):
            if not os.path.exists(f"/proc/{pid}"):
                caches.pop(pid, None)
                self.pids.discard(pid)
