"""Function symbols of ELF files, read in Python (no libbcc in the probe's process).

bcc's symbol cache (libbcc 0.26, Debian's) closes a descriptor it never opened
when it builds a process's perf-map module: ProcSyms::ModulePath leaves `fd_`
unset (fixed upstream in bcc 0.33) and its destructor closes whatever number
the reused memory held, which in the probe was once a BPF program's. So user
frames are resolved here: .symtab and .dynsym of each mapped file, read once
per file (keyed by device, inode, size and mtime, so every process mapping a
library shares its table) and kept compact.
"""
from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import struct
from array import array
from dataclasses import dataclass
from typing import Any

MAX_SYMBOLS = 400_000           # per file: the rest of a larger table is left out
MAX_TABLE_BYTES = 16 * 1024 * 1024   # a symbol or string table larger than this is not read
STT_NOTYPE, STT_FUNC, STT_GNU_IFUNC = 0, 2, 10
SHF_EXECINSTR = 0x4
SHT_SYMTAB, SHT_DYNSYM = 2, 11
PT_LOAD = 1


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class _Layout:
    ehdr: struct.Struct
    phdr: struct.Struct
    shdr: struct.Struct
    sym: struct.Struct


_LAYOUTS = {
    1: _Layout(struct.Struct("<HHIIIIIHHHHHH"), struct.Struct("<IIIIIIII"), struct.Struct("<IIIIIIIIII"),
               struct.Struct("<IIIBBH")),
    2: _Layout(struct.Struct("<HHIQQQIHHHHHH"), struct.Struct("<IIQQQQQQ"), struct.Struct("<IIQQQQIIQQ"),
               struct.Struct("<IBBHQQ")),
}


class ElfSymbols:
    """The function symbols of one ELF file: address -> name, by file offset or ELF address."""

    def __init__(self, f) -> None:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[5] != 1 or ident[4] not in _LAYOUTS:
            raise ElfError("not a little-endian ELF file")
        lay = _LAYOUTS[ident[4]]
        hdr = lay.ehdr.unpack(_read(f, 16, lay.ehdr.size))
        phoff, shoff, phentsize, phnum, shentsize, shnum = hdr[4], hdr[5], hdr[8], hdr[9], hdr[10], hdr[11]
        self.loads: list[tuple[int, int, int]] = []   # PT_LOAD (file offset, size in file, address)
        if phentsize >= lay.phdr.size:
            table = _read(f, phoff, min(phnum, 256) * phentsize)
            for i in range(0, len(table), phentsize):
                ph = lay.phdr.unpack_from(table, i)
                if ph[0] == PT_LOAD:
                    off, addr, filesz = (ph[2], ph[3], ph[5]) if ident[4] == 2 else (ph[1], ph[2], ph[4])
                    self.loads.append((off, filesz, addr))
        sections = []
        if shoff and shentsize >= lay.shdr.size:   # one read of the whole table, bounded
            table = _read(f, shoff, min(shnum, 65536) * shentsize)
            sections = [lay.shdr.unpack_from(table, i) for i in range(0, len(table), shentsize)]
        rows: dict[int, tuple[int, bytes]] = {}   # address -> (size, name)
        code = {i for i, x in enumerate(sections) if x[2] & SHF_EXECINSTR}
        for want in (SHT_DYNSYM, SHT_SYMTAB):
            for sh in sections:
                if sh[1] == want and sh[6] < len(sections):
                    self._read_table(f, lay, sh, sections[sh[6]], rows, code)
        items = sorted(rows.items())
        self.addrs = array("Q", (a for a, _ in items))
        self.sizes = array("Q", (s for _, (s, _n) in items))
        self._offsets = array("I")
        names, off = [], 0
        for _, (_s, n) in items:
            self._offsets.append(off)
            names.append(n)
            off += len(n)
        self._offsets.append(off)
        self._names = b"".join(names)

    @staticmethod
    def _read_table(f, lay: _Layout, sh: tuple, strsh: tuple, rows: dict, code: set[int]) -> None:
        """Functions of one symbol table into `rows`; untyped symbols too when they label code
        (hand-written assembly often leaves them untyped)."""
        size, entsize = sh[5], sh[9] or lay.sym.size
        if entsize < lay.sym.size or size > MAX_TABLE_BYTES or strsh[5] > MAX_TABLE_BYTES:
            return
        data, strs = _read(f, sh[4], size), _read(f, strsh[4], strsh[5])
        is64 = lay.sym.size == 24
        syms = lay.sym.iter_unpack(data[:len(data) - len(data) % entsize]) if entsize == lay.sym.size else \
            (lay.sym.unpack_from(data, i) for i in range(0, len(data) - lay.sym.size + 1, entsize))
        for s in syms:
            name, info, shndx, value, sz = (s[0], s[1], s[3], s[4], s[5]) if is64 else (s[0], s[3], s[5], s[1], s[2])
            kind = info & 0xF
            if not (kind == STT_FUNC or kind == STT_GNU_IFUNC or kind == STT_NOTYPE and shndx in code) \
                    or not shndx or not value or not name:
                continue
            end = strs.find(b"\0", name)
            if end <= name or len(rows) >= MAX_SYMBOLS and value not in rows:
                continue
            text, old = strs[name:end], rows.get(value)
            # of aliases the longest, then the one with fewer leading underscores (getpid, not __getpid)
            if old is None or sz > old[0] or sz == old[0] and len(text) - len(text.lstrip(b"_")) < \
                    len(old[1]) - len(old[1].lstrip(b"_")):
                rows[value] = (sz, text)

    def address(self, file_offset: int) -> int | None:
        """The ELF address that a byte at `file_offset` is loaded at, or None outside the loaded segments."""
        for off, filesz, addr in self.loads:
            if off <= file_offset < off + filesz:
                return file_offset - off + addr
        return None

    def name(self, addr: int) -> str | None:
        """The function holding `addr` (an ELF address), or None."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        size = self.sizes[i]
        if size and addr >= self.addrs[i] + size:
            return None
        return demangle(self._names[self._offsets[i]:self._offsets[i + 1]].decode("utf-8", "replace"))

    def __len__(self) -> int:
        return len(self.addrs)


def _read(f, offset: int, size: int) -> bytes:
    try:
        f.seek(offset)
        data = f.read(size)
    except (OSError, OverflowError, ValueError) as e:   # an offset past what a file can have
        raise ElfError(f"unreadable at offset {offset}: {e}") from None
    if len(data) < size:
        raise ElfError(f"truncated at offset {offset}")
    return data


# --- C++ (and Rust's legacy) names, through libstdc++'s demangler --------------

class _Demangler:
    def __init__(self) -> None:
        self.fn: Any = None
        self.free: Any = None
        try:
            cxx = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return
        self.fn = getattr(cxx, "__cxa_demangle")  # (not an attribute: the name would be mangled)
        self.fn.restype = ctypes.c_void_p
        self.fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        self.free = libc.free
        self.free.argtypes = [ctypes.c_void_p]

    def __call__(self, name: str) -> str:
        if not name.startswith("_Z") or self.fn is None:
            return name
        status = ctypes.c_int(0)
        p = self.fn(name.encode(), None, None, ctypes.byref(status))
        if not p:
            return name
        try:
            return ctypes.string_at(p).decode("utf-8", "replace") if status.value == 0 else name
        finally:
            self.free(p)


demangle = _Demangler()
