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

from shared.bounded import Bounded

MAX_SYMBOLS = 400_000           # per file: the rest of a larger table is left out
MAX_TABLE_BYTES = 16 * 1024 * 1024   # a symbol or string table larger than this is not read
MAX_NAME = 4096                      # bytes of one name (a longer one is cut)
MAX_NAME_BYTES = 16 * 1024 * 1024    # names kept per file
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
    """The function symbols of one ELF file: address -> name, by file offset or ELF address.
    Bounded whatever the file holds (a monitored process chooses what it maps): one table of
    each type is read, names are cut at MAX_NAME bytes and kept up to MAX_NAME_BYTES in all."""

    def __init__(self, f) -> None:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[5] != 1 or ident[4] not in _LAYOUTS:
            raise ElfError("not a little-endian ELF file")
        lay = _LAYOUTS[ident[4]]
        hdr = lay.ehdr.unpack(_read(f, 16, lay.ehdr.size))
        phoff, shoff, phentsize, phnum, shentsize, shnum = hdr[4], hdr[5], hdr[8], hdr[9], hdr[10], hdr[11]
        self.loads: list[tuple[int, int, int]] = []   # PT_LOAD (file offset, size in file, address)
        if phentsize == lay.phdr.size:
            table = _read(f, phoff, min(phnum, 256) * phentsize)
            for i in range(0, len(table), phentsize):
                ph = lay.phdr.unpack_from(table, i)
                if ph[0] == PT_LOAD:
                    off, addr, filesz = (ph[2], ph[3], ph[5]) if ident[4] == 2 else (ph[1], ph[2], ph[4])
                    self.loads.append((off, filesz, addr))
        sections = []
        if shoff and shentsize == lay.shdr.size:   # one read of the whole table (at most 4 MiB)
            table = _read(f, shoff, min(shnum, 65536) * shentsize)
            sections = [lay.shdr.unpack_from(table, i) for i in range(0, len(table), shentsize)]
        rows: dict[int, tuple[int, bytes, bool]] = {}   # address -> (size, name, sized by the file)
        self.name_bytes = 0
        for want in (SHT_DYNSYM, SHT_SYMTAB):
            sh = next((x for x in sections if x[1] == want and x[6] < len(sections)), None)
            if sh is not None:
                try:
                    self._read_table(f, lay, sh, sections, rows)
                except ElfError:   # the other table may still be good
                    pass
        items, sized_end = [], 0
        for addr, row in sorted(rows.items()):
            if not row[2] and addr < sized_end:   # an unsized label inside a sized function: the function
                continue
            items.append((addr, row))
            if row[2]:
                sized_end = max(sized_end, addr + row[0])
        self.addrs = array("Q", (a for a, _ in items))
        self.sizes = array("Q", (r[0] for _, r in items))
        self._offsets = array("I")
        names, off = [], 0
        for _, r in items:
            self._offsets.append(off)
            names.append(r[1])
            off += len(r[1])
        self._offsets.append(off)
        self._names = b"".join(names)

    def _read_table(self, f, lay: _Layout, sh: tuple, sections: list[tuple], rows: dict) -> None:
        """Functions of one symbol table into `rows`; untyped symbols too when they label code
        (hand-written assembly often leaves them untyped). A symbol without a size ends where its
        section does (and at the next symbol, when looked up)."""
        strsh = sections[sh[6]]
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
            if not value or not name or not 0 < shndx < len(sections) or name >= len(strs):
                continue
            sec = sections[shndx]
            if not (kind == STT_FUNC or kind == STT_GNU_IFUNC or kind == STT_NOTYPE and sec[2] & SHF_EXECINSTR):
                continue
            sized = sz > 0
            if not sized:
                sz = sec[3] + sec[5] - value
                if not 0 < sz <= sec[5]:
                    continue
            end = strs.find(b"\0", name, name + MAX_NAME)
            text = strs[name:end if end >= 0 else name + MAX_NAME]
            if not text or text[0] in b"$." or len(rows) >= MAX_SYMBOLS and value not in rows:
                continue   # empty, an ARM mapping symbol ($x, $d) or a local label (.L)
            old = rows.get(value)
            # of aliases a sized one, the longest, then the one with fewer leading underscores (getpid, not __getpid)
            if old is None or (sized, sz) > (old[2], old[0]) or (sized, sz) == (old[2], old[0]) and \
                    len(text) - len(text.lstrip(b"_")) < len(old[1]) - len(old[1].lstrip(b"_")):
                grown = len(text) - (len(old[1]) if old else 0)
                if self.name_bytes + grown > MAX_NAME_BYTES:
                    return
                self.name_bytes += grown
                rows[value] = (sz, text, sized)

    @property
    def nbytes(self) -> int:
        """About what this table holds in memory."""
        return len(self._names) + 20 * len(self.addrs)

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
        if addr >= self.addrs[i] + self.sizes[i]:   # every size is set (unsized ones end at their section)
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
        self._cache: Bounded[str, str] = Bounded(4096)
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
        if not name.startswith("_Z") or self.fn is None or len(name) > MAX_NAME:
            return name
        out = self._cache.get(name)
        if out is None:
            out = self._cache[name] = self._demangled(name)
        return out

    def _demangled(self, name: str) -> str:
        status = ctypes.c_int(0)
        p = self.fn(name.encode(), None, None, ctypes.byref(status))
        if not p:
            return name
        try:
            return ctypes.string_at(p).decode("utf-8", "replace") if status.value == 0 else name
        finally:
            self.free(p)


demangle = _Demangler()
