"""Stack addresses -> function names, in user space.

Kernel frames from /proc/kallsyms (sorted once, bisect per address). User
frames from each process's memory map and the ELF symbol tables of the files
it maps, opened through /proc/<pid>/map_files (or /proc/<pid>/root), so
binaries inside containers resolve without entering their mount namespace.
Bounded: processes and files are each kept up to a number, least recently
used dropped; a process's map is dropped once it is gone.
"""
from __future__ import annotations

import bisect
import os
import stat
import time
from array import array
from dataclasses import dataclass, field

from shared.bounded import Bounded

from .elfsyms import ElfSymbols

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


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    offset: int
    inode: int
    path: str        # as /proc/<pid>/maps names it (in the process's mount namespace)
    range: str       # "start-end" as in maps: /proc/<pid>/map_files/<range> opens the very file


@dataclass
class _Process:
    maps: list[_Mapping]
    starts: list[int]
    read_at: float   # monotonic
    files: dict[str, tuple] = field(default_factory=dict)   # mapping range -> its file's key in _files


MAX_MAPPINGS = 4096   # executable mappings read per process
REREAD_MAPS_S = 1.0   # a frame outside every known mapping re-reads the process's maps, at most this often
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC   # a FIFO or tty must not block us


class UserSymbols:
    """User frames: the executable mappings of each process (/proc/<pid>/maps, read again every
    window: `forget_maps`; at most `max_pids` processes) and the function symbols of each mapped
    file (services/probe/elfsyms.py; shared by every process that maps one, at most `max_files`
    and about `max_bytes` in all, least recently used dropped). A file is opened through
    /proc/<pid>/map_files (the very file mapped: one in a container, deleted or replaced since),
    else through /proc/<pid>/root when that is the mapped inode; only regular files are read.
    A frame in a file without symbols is named after the file ("[libfoo.so]"); one outside any
    file, or of a process gone, is [unknown]. Nothing here runs libbcc (see elfsyms.py for why)."""

    def __init__(self, max_pids: int = 64, max_files: int = 128, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._procs: Bounded[int, _Process] = Bounded(max_pids)
        # None: no ELF symbols there
        self._files: Bounded[tuple, ElfSymbols | None] = Bounded(max_files, self._dropped)
        self.max_bytes, self.nbytes = max_bytes, 0

    def name(self, addr: int, pid: int) -> str:
        proc = self._procs.touch(pid)
        if proc is None:
            proc = self._procs[pid] = self._read_maps(pid)
        m = _find(proc, addr)
        if m is None and time.monotonic() - proc.read_at >= REREAD_MAPS_S:  # mapped since (dlopen)?
            proc = self._procs[pid] = self._read_maps(pid)
            m = _find(proc, addr)
        if m is None:
            return UNKNOWN
        syms = self._symbols(pid, proc, m)
        file_offset = addr - m.start + m.offset
        elf_addr = syms.address(file_offset) if syms is not None else None
        sym = syms.name(elf_addr) if syms is not None and elf_addr is not None else None
        return sym or "[" + os.path.basename(m.path) + "]"

    def _read_maps(self, pid: int) -> _Process:
        maps = []
        try:
            with open(f"/proc/{pid}/maps", errors="replace") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                        lo, hi = parts[0].split("-")
                        maps.append(_Mapping(int(lo, 16), int(hi, 16), int(parts[2], 16), int(parts[4]),
                                             parts[5].rstrip("\n").removesuffix(" (deleted)"), parts[0]))
                        if len(maps) >= MAX_MAPPINGS:
                            break
        except (OSError, ValueError):
            pass
        maps.sort(key=lambda m: m.start)
        return _Process(maps, [m.start for m in maps], time.monotonic())

    def _symbols(self, pid: int, proc: _Process, m: _Mapping) -> ElfSymbols | None:
        key = proc.files.get(m.range)
        if key == ():   # could not be opened
            return None
        if key is not None and key in self._files:   # this mapping's file, read before
            return self._files.touch(key)
        for path, by_name in ((f"/proc/{pid}/map_files/{m.range}", False), (f"/proc/{pid}/root{m.path}", True)):
            try:
                fd = os.open(path, OPEN_FLAGS)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or by_name and st.st_ino != m.inode:
                    continue   # not a file, or (by its name) not the one mapped
                key = proc.files[m.range] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if key in self._files:
                    return self._files.touch(key)
                try:
                    syms: ElfSymbols | None = ElfSymbols(f)
                except Exception:   # ElfError, OSError...: a file, not ours, that no frame of it may cost the window
                    syms = None
                self._files[key] = syms
                self.nbytes += syms.nbytes if syms is not None else 0
                while self.nbytes > self.max_bytes and len(self._files) > 1:
                    self._dropped(*self._files.popitem(last=False))
                return syms
        proc.files[m.range] = ()
        return None

    def _dropped(self, _key: tuple, syms: ElfSymbols | None) -> None:
        self.nbytes -= syms.nbytes if syms is not None else 0

    def forget_maps(self) -> None:
        """Every process's map is read again when next needed (a process may have exec'd since)."""
        self._procs.clear()


def _find(proc: _Process, addr: int) -> _Mapping | None:
    i = bisect.bisect_right(proc.starts, addr) - 1
    if i >= 0 and addr < proc.maps[i].end:
        return proc.maps[i]
    return None
