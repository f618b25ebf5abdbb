"""Each kind's event layout, read from its named struct in bpf/common.h.

`struct ev_<kind> { struct ev_head h; s64 ret, ...; char path[STR_SZ]; ... };` (one line
each) gives the names of the six numbers after the head and of the members after them, with
their offsets: the decoder (services/probe/decode.py) reads records by these names, so the
BPF side and the decoder share one declaration of what each byte means.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .loader import BPF_DIR

HEAD_SIZE = 56  # struct ev_head (services/probe/decode.py HEAD without a[6])
_STRUCT = re.compile(r"^struct ev_(\w+)\s*\{\s*struct ev_head h;\s*(.*?)\};\s*$", re.M)
_UNION = re.compile(r"union \{ s64 a\[6\]; struct \{ (s64 [^;]*;) \}; \};")
_DEFINE = re.compile(r"^#define (\w+) (\d+)$", re.M)
_MEMBER = re.compile(r"^(char|u8|s64) (\w+)((?:\[[^\]]+\])*)$")
SIZES = {"char": 1, "u8": 1, "s64": 8}


class LayoutError(ValueError):
    """A struct in bpf/common.h the decoder cannot read."""


@dataclass(frozen=True)
class Member:
    name: str
    ctype: str                    # char: text, u8: bytes, s64: a number
    offset: int                   # from the start of the record
    dims: tuple[int, ...] = ()    # array dimensions (char vars[4][256]: (4, 256))

    @property
    def size(self) -> int:
        n = SIZES[self.ctype]
        for d in self.dims:
            n *= d
        return n


@dataclass(frozen=True)
class Layout:
    kind: str
    nums: tuple[str, ...]         # the names of a[0..5]
    members: tuple[Member, ...]   # what follows, in order
    size: int

    def read(self, a: tuple, data: bytes) -> dict:
        """The record's named values: the six numbers, then each member the record reaches
        (text up to its NUL or the record's end; a two-dimensional char array as a list of
        texts; a number only whole). Members after the record's end are absent."""
        out = dict(zip(self.nums, a))
        n = len(data)
        for m in self.members:
            off = m.offset
            if off >= n:
                break
            if m.ctype == "char" and not m.dims[1:]:  # the common case: one text
                end = data.find(b"\0", off, off + m.size)
                out[m.name] = data[off:end if end >= 0 else off + m.size].decode("utf-8", "replace")
            elif m.ctype == "u8":
                out[m.name] = data[off:off + m.size]
            elif m.ctype == "s64":
                if off + 8 > n:
                    break
                out[m.name] = int.from_bytes(data[off:off + 8], "little", signed=True)
            else:
                width = m.dims[1]
                out[m.name] = [_text(data, off + i * width, width) for i in range(m.dims[0]) if off + i * width < n]
        return out


def _text(data: bytes, off: int, size: int) -> str:
    end = data.find(b"\0", off, off + size)
    return data[off:end if end >= 0 else off + size].decode("utf-8", "replace")


def _value(expr: str, defines: dict[str, int], where: str) -> int:
    """An array dimension: a number, a #define, or a sum of them."""
    total = 0
    for term in expr.split("+"):
        term = term.strip()
        if term.isdigit():
            total += int(term)
        elif term in defines:
            total += defines[term]
        else:
            raise LayoutError(f"{where}: array size {expr!r} is not a number or #define of bpf/common.h")
    return total


def parse(text: str) -> dict[str, Layout]:
    """{kind: Layout} of every `struct ev_<kind>` line of `text` whose members are named."""
    defines = {k: int(v) for k, v in _DEFINE.findall(text)}
    out: dict[str, Layout] = {}
    for kind, body in _STRUCT.findall(text):
        body = _UNION.sub(r"\1", body)
        decls = [d.strip() for d in body.split(";") if d.strip()]
        if not decls or not decls[0].startswith("s64 ") or "[" in decls[0]:
            continue  # a shape (s64 a[6]; ...), not a kind's named struct
        nums = tuple(n.strip() for n in decls[0][4:].split(","))
        if len(nums) != 6:
            raise LayoutError(f"struct ev_{kind}: {len(nums)} numbers named after the head, not 6")
        offset, members = HEAD_SIZE + 48, []
        for d in decls[1:]:
            m = _MEMBER.match(d)
            if not m:
                raise LayoutError(f"struct ev_{kind}: member {d!r} is not char/u8/s64 name[size]...")
            dims = tuple(_value(x, defines, f"struct ev_{kind}") for x in re.findall(r"\[([^\]]+)\]", m.group(3)))
            mem = Member(m.group(2), m.group(1), offset, dims)
            members.append(mem)
            offset += mem.size
        out[kind] = Layout(kind, nums, tuple(members), offset)
    return out


_HEADER = (BPF_DIR / "common.h").read_text()
DEFINES = {k: int(v) for k, v in _DEFINE.findall(_HEADER)}  # the header's numeric #defines
LAYOUTS = parse(_HEADER)
