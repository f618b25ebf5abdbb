"""Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to place a few
struct members and to know which kernel functions exist.

BPF code must not depend on kernel struct layouts from headers (the headers
bcc compiles with may be another kernel's); the few offsets the LSM/fentry
programs need are read here from the running kernel's own type information
and passed to the compiler as -D constants (CO-RE done by hand).
"""
from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from shared import log

_log = log.get("probe.btf")

VMLINUX = Path("/sys/kernel/btf/vmlinux")

# kind -> bytes that follow struct btf_type (fixed, or per vlen entry)
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_STRUCT, _UNION, _FUNC = 4, 5, 12


class BTFError(RuntimeError):
    """The kernel's BTF is missing or lacks what the probe needs (the message says what)."""


class BTF:
    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise BTFError("not a BTF blob (bad magic)")
        self._strs = data[hdr_len + str_off:hdr_len + str_off + str_len]
        types = data[hdr_len + type_off:hdr_len + type_off + type_len]
        self.structs: dict[str, list[tuple[str, int, int]]] = {}  # name -> [(member, type id, bit offset)]
        self.funcs: set[str] = set()
        self._members: dict[int, list[tuple[str, int, int]]] = {}  # type id -> members (anonymous too)
        off, tid = 0, 1
        while off < len(types):
            name_off, info, _size = struct.unpack_from("<III", types, off)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            off += 12
            if kind in (_STRUCT, _UNION):
                mem = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", types, off + 12 * i)
                    mem.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
                self._members[tid] = mem
                name = self._str(name_off)
                if name and kind == _STRUCT and name not in self.structs:
                    self.structs[name] = mem
            elif kind == _FUNC:
                self.funcs.add(self._str(name_off))
            off += _FIXED.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
            tid += 1

    def _str(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode()

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`, looking into anonymous unions/structs."""
        mem = self.structs.get(struct_name)
        if mem is None:
            raise BTFError(f"struct {struct_name} not in the kernel's BTF")
        found = self._find(mem, member, 0)
        if found is None:
            raise BTFError(f"struct {struct_name} has no member {member} in the kernel's BTF")
        return found // 8

    def _find(self, mem, member: str, base: int) -> int | None:
        for name, tid, bits in mem:
            if name == member:
                return base + bits
            if not name and tid in self._members:
                r = self._find(self._members[tid], member, base + bits)
                if r is not None:
                    return r
        return None


@lru_cache(maxsize=1)
def vmlinux() -> BTF:
    try:
        return BTF(VMLINUX.read_bytes())
    except OSError as e:
        raise BTFError(f"cannot read the kernel's BTF {VMLINUX}: {e} "
                       "(kernel built without CONFIG_DEBUG_INFO_BTF?)") from e


# What bpf/process.bpf.c current_tty() reads: -D name -> (struct, member).
TTY_FIELDS = {
    "TTY_OFF_SIGNAL": ("task_struct", "signal"),
    "TTY_OFF_TTY": ("signal_struct", "tty"),
    "TTY_OFF_INDEX": ("tty_struct", "index"),
    "TTY_OFF_DRIVER": ("tty_struct", "driver"),
    "TTY_OFF_MAJOR": ("tty_driver", "major"),
    "TTY_OFF_MINOR_START": ("tty_driver", "minor_start"),
}


def tty_cflags(path: Path = VMLINUX) -> list[str]:
    """-D flags for current_tty(); [] (tty unknown) when BTF or a member is missing."""
    try:
        btf = vmlinux() if path == VMLINUX else BTF(path.read_bytes())
        return [f"-D{k}={btf.member_offset(s, m)}" for k, (s, m) in TTY_FIELDS.items()]
    except (OSError, BTFError, struct.error) as e:
        _log.warning("controlling tty not available (proc.tty unknown): %s", e)
        return []
