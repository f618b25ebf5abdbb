"""Each kind's record is read by the names of its `struct ev_<kind>` in bpf/common.h
(services/probe/layouts.py), the declaration the BPF side compiles against (its
_Static_asserts pin each to its shape): crafted records decode by those names, and a
record too short for its kind is a DecodeError, never a crash of the reader."""
from __future__ import annotations

import pytest

from services.probe.decode import BY_FD, FD_NO_PATH, HEAD, KIND_NAMES, KIND_NUMBERS, RET_UNKNOWN, DecodeError, Decoder
from services.probe.layouts import DEFINES, LAYOUTS, LayoutError, parse

STR_SZ = DEFINES["STR_SZ"]


def record(kind: str, a: tuple, *strings: bytes, size: int | None = None) -> bytes:
    head = HEAD.pack(10**9, 7, KIND_NUMBERS[kind], 100, 101, 1, 0, 0, b"cmd", *a)
    body = b"".join(s.ljust(STR_SZ, b"\0") for s in strings)
    data = head + body
    return data.ljust(size, b"\0") if size else data


def test_every_kind_has_a_named_layout_of_six_numbers():
    assert set(LAYOUTS) == set(KIND_NAMES.values())
    assert all(len(lay.nums) == 6 for lay in LAYOUTS.values())
    assert LAYOUTS["open"].nums[:4] == ("ret", "flags", "mode", "dirfd")
    assert [m.name for m in LAYOUTS["rename"].members] == ["raw_oldpath", "raw_newpath", "old_base", "new_base"]


def test_records_decode_by_their_names():
    d = Decoder("n")
    ev = d.decode(record("chmod", (0, 0o4755, -100, 0, 1, 0), b"x", b"/usr/bin"))
    assert (ev["path"], ev["raw_path"], ev["mode"], ev["dirfd"], ev["ret"]) == ("/usr/bin/x", "x", 0o4755, -100, 0)
    ev = d.decode(record("chmod", (0, 0o600, 5, 0, 0, BY_FD), b"/etc/x"))  # fchmod: the fd's path
    assert (ev["path"], "raw_path" in ev, ev["fd"], ev["mode"], ev["path_from_fd"]) == ("/etc/x", False, 5, 0o600, True)
    ev = d.decode(record("chown", (0, 0, 0, 5, 0, BY_FD), b""))  # an fd the kernel could not walk
    assert (ev["path"], ev["fd"], "path_from_fd" in ev, "flags" in ev) == (None, 5, False, False)
    ev = d.decode(record("truncate", (0, 9, 5, 0, 0, BY_FD | FD_NO_PATH), b""))  # a memfd's: no path at all
    assert (ev["path"], ev["fd"], ev["path_from_fd"], ev["length"]) == (None, 5, False, 9)
    ev = d.decode(record("chown", (0, 0, 0, 5, 0, 0)))  # fchown from a probe before BY_FD
    assert (ev["path"], ev["fd"], "flags" in ev) == (None, 5, False)
    ev = d.decode(record("chown", (0, 0, 0, -100, 0, 0x100), b"/etc/x"))
    assert (ev["path"], ev["dirfd"], ev["flags"], "fd" in ev) == ("/etc/x", -100, 0x100, False)
    ev = d.decode(record("chmod", (0, 0o600, 5, 0, 0, 0)))  # fchmod from a probe before BY_FD: no path
    assert (ev["path"], ev["fd"], ev["mode"]) == (None, 5, 0o600)
    ev = d.decode(record("memfd", (3, 1, 0, 0, 0, 0), b"payload"))  # no entry in FIELDS: its own names
    assert (ev["name"], ev["flags"], ev["ret"]) == ("payload", 1, 3) and "_2" not in ev
    ev = d.decode(record("mount", (0, 0, 0, 0, 0, 0), b"none", b"/mnt", b"tmpfs"[:32], size=LAYOUTS["mount"].size))
    assert (ev["source"], ev["target"], ev["fstype"]) == ("none", "/mnt", "tmpfs")
    ev = d.decode(record("open", (RET_UNKNOWN, 0, 0, -100, 0, 0), b"/etc/shadow"))
    assert (ev["ret"], ev["ret_unknown"], ev["path"]) == (0, True, "/etc/shadow")


def test_a_record_too_short_for_its_kind_is_a_decode_error():
    d = Decoder("n")
    short = record("accept", (4, 3, 1, 80, 2, 0))[:HEAD.size + 10] + b"\2\0"  # sockaddr cut off
    with pytest.raises(DecodeError, match="accept record of"):
        d.decode(short)


def test_a_layout_the_decoder_cannot_read_is_named():
    with pytest.raises(LayoutError, match="struct ev_x: 5 numbers"):
        parse("struct ev_x { struct ev_head h; s64 ret, a, b, c, d; };")
    with pytest.raises(LayoutError, match="struct ev_y: array size 'NOPE'"):
        parse("struct ev_y { struct ev_head h; s64 ret, a, b, c, d, e; char s[NOPE]; };")
    assert parse("struct ev_num { struct ev_head h; s64 a[6]; };") == {}  # a shape, not a kind's struct
