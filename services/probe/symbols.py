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

UNKNOWN = "[unknown]"


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms") -> None:
        addrs, names = [], []
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3 or parts[1] not in "tTwW":
                        continue
                    a = int(parts[0], 16)
                    if a:
                        addrs.append(a)
                        names.append(parts[2])
        except OSError:
            pass
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self.addrs = [addrs[i] for i in order]
        self.names = [names[i] for i in order]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.names[i] if i >= 0 else UNKNOWN


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
