"""Kernel struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).

The BPF code must not take struct layouts from the (mismatched) kernel
headers (DESIGN.md, portability rule). Where a field is truly needed, its
offset is read here at load time and passed to the compiler as a constant
(`-DTTY_OFF_SIGNAL=...`); without BTF the feature reports "unknown".
"""
from __future__ import annotations

import struct
from pathlib import Path

from shared import log

_log = log.get("probe.btf")

VMLINUX = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F
_STRUCT, _UNION, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 4, 5, 8, 9, 10, 11, 18
# bytes after the 12-byte common part, per kind: fixed, and per vlen entry
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
          17: (4, 0), 19: (0, 12)}

# What bpf/process.bpf.c current_tty() reads: -D name -> (struct, member path).
TTY_FIELDS = {
    "TTY_OFF_SIGNAL": ("task_struct", "signal"),
    "TTY_OFF_TTY": ("signal_struct", "tty"),
    "TTY_OFF_INDEX": ("tty_struct", "index"),
    "TTY_OFF_DRIVER": ("tty_struct", "driver"),
    "TTY_OFF_MAJOR": ("tty_driver", "major"),
    "TTY_OFF_MINOR_START": ("tty_driver", "minor_start"),
}


class BTFError(ValueError):
    """BTF data that cannot be read, or a struct/member it does not have."""


class BTF:
    """The struct and union types of one BTF blob (members: name, type id, bit offset)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF blob shorter than its header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != _MAGIC:
            raise BTFError(f"bad BTF magic {magic:#x}")
        self._strs = data[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types: list[tuple[int, str, int, list]] = [(0, "", 0, [])]  # id -> (kind, name, type, members)
        self._structs: dict[str, int] = {}
        off, end = hdr_len + type_off, hdr_len + type_off + type_len
        while off < end:
            name_off, info, size_type = struct.unpack_from("<III", data, off)
            off += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            fixed, per = _EXTRA.get(kind, (0, 0))
            members = []
            if kind in (_STRUCT, _UNION):
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, off + 12 * i)
                    members.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
            name = self._str(name_off)
            self.types.append((kind, name, size_type, members))
            if kind == _STRUCT and name and vlen and name not in self._structs:
                self._structs[name] = len(self.types) - 1
            off += fixed + per * vlen

    def _str(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        return self._strs[off:end].decode(errors="replace")

    def _resolve(self, tid: int) -> int:
        while self.types[tid][0] in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
            tid = self.types[tid][2]
        return tid

    def _find(self, tid: int, member: str) -> int | None:
        """Bit offset of `member` in struct/union `tid`, looking into anonymous members."""
        for name, mtype, bits in self.types[tid][3]:
            if name == member:
                return bits
            if not name:
                inner = self._resolve(mtype)
                if self.types[inner][0] in (_STRUCT, _UNION):
                    sub = self._find(inner, member)
                    if sub is not None:
                        return bits + sub
        return None

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`."""
        tid = self._structs.get(struct_name)
        if tid is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        bits = self._find(tid, member)
        if bits is None:
            raise BTFError(f"struct {struct_name} has no member {member}")
        if bits % 8:
            raise BTFError(f"{struct_name}.{member} is a bit field")
        return bits // 8


def tty_cflags(path: Path = VMLINUX) -> list[str]:
    """-D flags for current_tty(); [] (tty unknown) when BTF or a member is missing."""
    try:
        btf = BTF(path.read_bytes())
        return [f"-D{k}={btf.offset(s, m)}" for k, (s, m) in TTY_FIELDS.items()]
    except (OSError, BTFError, struct.error) as e:
        _log.warning("controlling tty not available (proc.tty unknown): %s", e)
        return []
