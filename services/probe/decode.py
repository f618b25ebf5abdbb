"""Raw ring-buffer records (bpf/common.h layouts) -> event dicts (shared/schema.py).

The kind in the head names the record's layout: its `struct ev_<kind>` in
bpf/common.h, read by services/probe/layouts.py, names the six numbers after
the head and the members after them. Each kind's event fields are made from
those names (FIELDS; a kind without an entry goes out under its record's own
names). Kind numbers and sizes are read from bpf/common.h too, so every byte's
meaning is declared in one place.
"""
from __future__ import annotations

import base64
import os
import posixpath
import re
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from shared.filterplan import PATH_KINDS
from shared.netnames import IP_PROTO_NAMES, ip_text, sock_proto
from shared.schema import new_event_id

from .layouts import DEFINES, LAYOUTS
from .loader import BPF_DIR
from .paths import absolute

HEAD = struct.Struct("<QQIIIIII16s6q")  # struct ev_head + s64 a[6]
STR_SZ, ARGV_SZ, ARG_MAX_LEN = DEFINES["STR_SZ"], DEFINES["ARGV_SZ"], DEFINES["ARG_MAX_LEN"]
SIZE_NUM = HEAD.size
SIZE_STR1 = SIZE_NUM + STR_SZ
SIZE_STR2 = SIZE_STR1 + STR_SZ
SIZE_EXEC = SIZE_NUM + STR_SZ + ARGV_SZ + ARG_MAX_LEN + STR_SZ  # ... filename, argv, base
ENV_SLOTS = DEFINES["ENV_SLOTS"]
BY_FD = DEFINES["BY_FD"]  # chmod/chown/truncate flags: named by an fd (fchmod, fchown, ftruncate)
FD_NO_PATH = DEFINES["FD_NO_PATH"]  # ... whose file has no path (a pipe's, a memfd's)
AT_FLAGS = 0xFFFFFFFF     # ... the rest of chown's: fchownat's AT_* flags
ID_UNCHANGED = 0xFFFFFFFF
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024  # oom: the kernel counts pages
DEDUP_HASH = "_dedup"  # a[4] of path kinds (path hash), procvm, ptrace: the kernel's dedup key; the probe pops it
KEYED_DEDUP_KINDS = ("procvm", "ptrace")  # deduplicated by caller and target (bpf/priv.bpf.c)


def read_kinds(header: Path = BPF_DIR / "common.h") -> dict[int, str]:
    """{number: name} from the `#define K_NAME n` lines of bpf/common.h."""
    found = re.findall(r"^#define K_([A-Z]+) (\d+)$", header.read_text(), re.M)
    return {int(n): name.lower() for name, n in found if name != "MAX"}


KIND_NAMES = read_kinds()
# a[0] of a call that has not returned yet (bpf/common.h): decoded as ret 0 with ret_unknown,
# so rules judge the attempt as if it succeeded and say the result is unknown
RET_UNKNOWN = -int(re.search(r"^#define RET_UNKNOWN \(-(0x[0-9a-fA-F]+)LL\)", (BPF_DIR / "common.h").read_text(),
                             re.M).group(1), 16)
KIND_NUMBERS = {v: k for k, v in KIND_NAMES.items()}


class DecodeError(ValueError):
    """A ring-buffer record that matches no known layout."""


def _s(data: bytes, off: int, size: int = STR_SZ) -> str:
    end = data.find(b"\0", off, off + size)
    return data[off:end if end >= 0 else off + size].decode("utf-8", "replace")


def _caps(data: bytes, off: int) -> int | None:
    v = int.from_bytes(data[off:off + 8], "little", signed=True)
    return v if v >= 0 else None


def _i32(v: int) -> int:
    """A C int the kernel passed in a 64-bit slot without sign extension."""
    return v - (1 << 32) if (1 << 31) <= v < (1 << 32) else v


def _id(v: int) -> int | None:
    return None if v == ID_UNCHANGED or v < 0 else v


def _sockaddr(sa: bytes) -> tuple[int, str | None, int | None]:
    """(family, address, port) of a raw user sockaddr."""
    family = int.from_bytes(sa[0:2], "little")
    if family == socket.AF_INET:
        return family, socket.inet_ntop(socket.AF_INET, sa[4:8]), int.from_bytes(sa[2:4], "big")
    if family == socket.AF_INET6:
        return family, socket.inet_ntop(socket.AF_INET6, sa[8:24]), int.from_bytes(sa[2:4], "big")
    if family == socket.AF_UNIX:
        path = sa[2:110]
        if path[:1] == b"\0":  # abstract socket
            return family, "@" + path[1:].partition(b"\0")[0].decode("utf-8", "replace"), None
        return family, path.partition(b"\0")[0].decode("utf-8", "replace"), None
    return family, None, None




DNS_PAYLOAD_SZ = DEFINES["DNS_PAYLOAD_SZ"]
DNS_DATA = next(m for m in LAYOUTS["dns"].members if m.name == "data")  # after laddr, raddr


def _dns(r: dict, data: bytes) -> dict:
    """struct ev_dns: the raw DNS message goes on as base64; services/enricher/dns.py parses it
    (what a short record holds of the payload is kept)."""
    at = DNS_DATA.offset
    family, copied = r["family"], max(0, min(r["copied"], DNS_PAYLOAD_SZ, len(data) - at))
    addrs = data[DNS_DATA.offset - 32:DNS_DATA.offset]
    return {"direction": "answer" if r["direction"] else "query", "family": family,
            "proto": IP_PROTO_NAMES.get(r["proto"]), "saddr": ip_text(family, addrs[:16]),
            "sport": (r["ports"] >> 16) & 0xFFFF, "daddr": ip_text(family, addrs[16:]),
            "dport": r["ports"] & 0xFFFF, "len": r["len"], "truncated": r["len"] > copied,
            "payload": base64.b64encode(data[at:at + copied]).decode()}


WX_SYSCALLS = ("mprotect", "mmap", "pkey_mprotect")  # WX_* in bpf/kernel.bpf.c
SETID_SYSCALLS = ("set{x}id", "setre{x}id", "setres{x}id")
DUP_SYSCALLS = ("dup", "dup2", "dup3")
SOCK_ORIGINS = {1: "socket", 2: "accepted", 3: "connected"}  # bpf/net.bpf.c SOCK_*: how an fd became a socket
# (0, "unknown": a socket the probe did not see made, found by its inode: bpf/file.bpf.c fd_inet_family)
# io_uring operations the probe reports (bpf/kernel.bpf.c iou_watched), by uapi number, for
# kernels whose tracepoint does not name them
IORING_OPS = {13: "accept", 16: "connect", 18: "openat", 28: "openat2", 35: "renameat", 36: "unlinkat",
              37: "mkdirat", 38: "symlinkat", 39: "linkat", 41: "fsetxattr", 42: "setxattr", 45: "socket",
              54: "fixed_fd_install", 55: "ftruncate", 56: "bind", 57: "listen"}


# Each kind's event fields from its named record (services/probe/layouts.py: the names of
# its struct ev_<kind> in bpf/common.h; members a shorter record lacks are absent). Kinds
# whose fields are their record's names as they are (but `_n` and hashes) have no entry.
def _path_of(r: dict) -> dict:  # open, unlink, mkdir, chmod: the path, absolute when its base is known
    raw = r.get("raw_path", "")
    return {"path": absolute(raw, r.get("base")), "raw_path": raw, "ret": r["ret"], "dirfd": _i32(r["dirfd"])}


def _open(r: dict) -> dict:
    return {**_path_of(r), "flags": r["flags"], "mode": r["mode"]}


def _execenv(r: dict) -> dict:
    env: dict[str, str] = {}
    for slot in r.get("vars", [])[:max(0, min(r["slots"], ENV_SLOTS))]:
        name, eq, value = slot.partition("=")
        if eq:
            env.setdefault(name, value)
    return {"env": env, "env_scanned": r["env_scanned"], "env_truncated": bool(r["env_truncated"])}


def _chdir(r: dict) -> dict:  # cwd: the new working directory, walked by the kernel ("" if unknown)
    raw, cwd = r.get("raw_path", ""), r.get("cwd", "")
    if r["is_fchdir"] == 1 or "raw_path" not in r:  # fchdir: an fd
        return {"path": cwd or None, "raw_path": None, "ret": r["ret"], "fd": r["fd"]}
    return {"path": cwd or raw, "raw_path": raw, "ret": r["ret"]}


def _two_paths(r: dict) -> dict:  # rename, link
    old, new = r.get("raw_oldpath", ""), r.get("raw_newpath", "")
    return {"oldpath": absolute(old, r.get("old_base")), "newpath": absolute(new, r.get("new_base")),
            "raw_oldpath": old, "raw_newpath": new, "ret": r["ret"], "flags": r["flags"]}


def _symlink(r: dict) -> dict:  # the target, as the link resolves it: relative to the link's directory
    raw, target = r.get("raw_path", ""), r.get("raw_target", "")
    path = absolute(raw, r.get("base"))
    return {"target": absolute(target, posixpath.dirname(path) if path.startswith("/") else None),
            "raw_target": target, "path": path, "raw_path": raw, "ret": r["ret"]}


def _by_fd_or_path(r: dict, fields: dict) -> dict:
    """chmod, chown, truncate; fchmod & co (BY_FD) carry the fd's path as the kernel walked it
    (path_from_fd True), or none: path_from_fd False when the file has no path to name."""
    if r["flags"] & BY_FD or ("raw_path" not in r and "path" not in r):  # (no path: a probe before BY_FD)
        path = r.get("raw_path", r.get("path")) or None
        named = {"path_from_fd": True} if path else {"path_from_fd": False} if r["flags"] & FD_NO_PATH else {}
        return {"path": path, **fields, "ret": r["ret"], "fd": _i32(r["dirfd"]), **named}
    out = _path_of(r) if "raw_path" in r else {"path": r["path"], "ret": r["ret"], "dirfd": _i32(r["dirfd"])}
    return {**out, **fields}


def _chown_flags(r: dict) -> dict:  # fchownat's AT_* flags, for the path forms
    return {"flags": r["flags"] & AT_FLAGS} if "path" in r and not r["flags"] & BY_FD else {}


def _sock(r: dict) -> dict:  # connect, accept, listen
    family, addr, port = _sockaddr(r.get("sa", b""))
    return {"family": family, "daddr": addr, "dport": port, "la": r.get("la", b"")}


def _connect(r: dict) -> dict:
    s = _sock(r)
    return {"family": s["family"], "daddr": s["daddr"], "dport": s["dport"], "saddr": None, "sport": None,
            "proto": sock_proto(s["family"], r["type"]), "ret": r["ret"], "fd": _i32(r["fd"])}


def _accept(r: dict) -> dict:
    s = _sock(r)
    family, lfamily = s["family"], r["lfamily"] or s["family"]
    return {"family": family or lfamily, "daddr": s["daddr"], "dport": s["dport"],
            "saddr": ip_text(lfamily, s["la"]), "sport": r["lport"] or None,
            "proto": sock_proto(family or lfamily, r["type"]), "ret": r["ret"], "fd": _i32(r["fd"])}


def _listen(r: dict) -> dict:
    lfamily = r["lfamily"] or _sock(r)["family"]
    return {"family": lfamily, "saddr": ip_text(lfamily, r.get("la", b"")), "sport": r["lport"] or None,
            "ret": r["ret"], "fd": r["fd"], "backlog": r["backlog"]}


def _setid(x: str) -> Callable[[dict], dict]:
    """setuid/setgid: the requested ids as new_*; the head's uid/gid become the caller's before
    the call (caller_ids), as Falco's user.uid on the syscall's enter side."""
    def fields(r: dict) -> dict:
        return {"syscall": SETID_SYSCALLS[r["syscall"] % 3].format(x=x), f"new_{x}id": _id(r["id"]),
                f"new_e{x}id": _id(r["eid"]), f"new_s{x}id": _id(r["sid"]), "ret": r["ret"],
                "uid": r["caller_ids"] & 0xFFFFFFFF, "gid": (r["caller_ids"] >> 32) & 0xFFFFFFFF}
    return fields


def _mprotect(r: dict) -> dict:  # W+X requests only (bpf/kernel.bpf.c wx_stash)
    syscall = WX_SYSCALLS[(r["prot_syscall"] >> 32) % len(WX_SYSCALLS)]
    mmap = syscall == "mmap"
    fd = _i32(r["mmap_fd"])
    return {"syscall": syscall, "addr": r["addr"] & 0xFFFFFFFFFFFFFFFF, "len": r["len"],
            "prot": r["prot_syscall"] & 0xFFFFFFFF, "flags": r["mmap_flags"] if mmap else None,
            "fd": fd if mmap and fd >= 0 else None, "ret": r["ret"]}  # mmap: the address mapped


def _iouring(r: dict) -> dict:  # the ring's creation (opcode -1), or a process's first request of an operation
    op, setup = r.get("op", "")[:32].lower(), r["opcode"] < 0
    return {"op": op or IORING_OPS.get(r["opcode"], f"op{r['opcode']}"), "opcode": None if setup else r["opcode"],
            "fd": _i32(r["fd"]) if setup else None, "sq_entries": r["sq_entries"] if setup else None,
            "flags": r["flags"], "sq_thread": bool(r["sq_thread"]), "ret": r["ret"]}


FIELDS: dict[str, Callable[[dict], dict]] = {
    "open": _open,
    "execenv": _execenv,
    "exit": lambda r: {"exit_code": r["exit_code"] if r["exit_code"] >= 0 else None},
    "fork": lambda r: {"child_pid": r["child_pid"], "clone_flags": r["clone_flags"]},
    "chdir": _chdir,
    "unlink": lambda r: {**_path_of(r), "flags": r["flags"]},
    "rename": _two_paths,
    "link": _two_paths,
    "symlink": _symlink,
    "mkdir": lambda r: {**_path_of(r), "mode": r["mode"]},
    "chmod": lambda r: _by_fd_or_path(r, {"mode": r["mode"]}),
    "chown": lambda r: _by_fd_or_path(r, {"owner_uid": _id(r["owner_uid"]), "owner_gid": _id(r["owner_gid"]),
                                          **_chown_flags(r)}),
    "truncate": lambda r: _by_fd_or_path(r, {"length": r["length"]}),
    "connect": _connect,
    "accept": _accept,
    "listen": _listen,
    "dup": lambda r: {"syscall": DUP_SYSCALLS[r["syscall"] % 3], "oldfd": r["oldfd"], "newfd": r["newfd"],
                      "fd_type": "socket" if r["is_sock"] else "other",
                      "sock_origin": SOCK_ORIGINS.get(r["origin"], "unknown") if r["is_sock"] else None,
                      "ret": r["ret"]},
    "ptrace": lambda r: {"request": r["request"], "target_pid": _i32(r["target_pid"]), "ret": r["ret"]},
    "setuid": _setid("u"),
    "setgid": _setid("g"),
    "procvm": lambda r: {"syscall": "process_vm_writev" if r["write"] else "process_vm_readv",
                         "target_pid": _i32(r["target_pid"]), "riovcnt": r["riovcnt"], "ret": r["ret"]},
    "mprotect": _mprotect,
    "iouring": _iouring,
    "setns": lambda r: {"fd": _i32(r["fd"]), "nstype": r["nstype"], "ret": r["ret"]},
    "signal": lambda r: {"sig": r["sig"], "target_pid": _i32(r["target_pid"]), "ret": r["ret"]},
    "bpf": lambda r: {"cmd": r["cmd"], "prog_type": r["prog_type"] if r["prog_type"] >= 0 else None, "ret": r["ret"]},
    "module": lambda r: {"syscall": "finit_module" if r["is_finit"] == 1 else "init_module", "name": None,
                         "params": r.get("params", ""), "fd": _i32(r["fd"]) if _i32(r["fd"]) >= 0 else None,
                         "ret": r["ret"]},
    "oom": lambda r: {"victim_pid": r["victim_pid"], "victim_comm": r.get("victim_comm", ""),
                      "victim_uid": r["victim_uid"], "total_vm_kb": r["total_vm"] * PAGE_KB,
                      "anon_rss_kb": r["anon_rss"] * PAGE_KB, "file_rss_kb": r["file_rss"] * PAGE_KB},
}


def _as_named(r: dict) -> dict:
    """The record's own names (socket, memfd, mount, unshare, ...), without unused slots and hashes."""
    return {k: v for k, v in r.items() if not k.startswith("_") and k not in ("path_hash", "dedup_key")}


def _fields(kind: str, a: tuple, data: bytes) -> dict:
    """Kind-specific fields from the numbers `a` and the members after them in `data`."""
    if kind == "exec":
        return _exec_fields(a, data)
    if kind == "dns":
        return _dns(LAYOUTS["dns"].read(a, b""), data)
    fields = FIELDS.get(kind)
    if fields is not None:
        return fields(LAYOUTS[kind].read(a, data))
    layout = LAYOUTS[kind]  # its text members all there, "" past a short record's end
    return _as_named({**dict.fromkeys((m.name for m in layout.members if m.ctype == "char"), ""),
                      **layout.read(a, data)})


def _exec_fields(a: tuple, data: bytes) -> dict:
    """exec: argv is argc NUL-separated strings in the first argv_len bytes of its area."""
    r = LAYOUTS["exec"].read(a, data[:SIZE_STR1])  # the numbers and the filename
    argv_at = SIZE_STR1
    area = data[argv_at:argv_at + r["argv_len"]]
    if r["argc"] < 0:  # the new image's argument area, whole: its strings end in NULs
        argv = area[:-1].split(b"\0") if area.endswith(b"\0") else area.split(b"\0")
        argv = [] if argv == [b""] else argv
    else:
        argv = area.split(b"\0")[:r["argc"]]
    n = len(data)
    base = _s(data, SIZE_STR1 + ARGV_SZ + ARG_MAX_LEN) if n >= SIZE_EXEC else None
    raw = r.get("filename", "")
    return {"filename": absolute(raw, base), "raw_filename": raw,
            "argv": [x.decode("utf-8", "replace") for x in argv], "argv_truncated": bool(r["argv_truncated"]),
            "ret": r["ret"], "tty": r["tty"] if r["tty"] >= 0 else None,
            "cap_permitted": r["cap_permitted"] if r["cap_permitted"] >= 0 else None,
            "cap_bounding": _caps(data, SIZE_EXEC) if n >= SIZE_EXEC + 8 else None}


class Decoder:
    """Turns records into events; boot-time stamps become wall-clock ns."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._comms: dict[bytes, str] = {}
        self.resync_clock()

    def resync_clock(self) -> None:
        self.boot_to_wall = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def decode(self, data: bytes) -> dict:
        if len(data) < SIZE_NUM:
            raise DecodeError(f"record of {len(data)} bytes is shorter than the {SIZE_NUM}-byte head")
        v = HEAD.unpack_from(data)
        kind = KIND_NAMES.get(v[2])
        if kind is None:
            raise DecodeError(f"unknown kind number {v[2]} (record of {len(data)} bytes)")
        comm = self._comms.get(v[8])
        if comm is None:
            comm = self._comm(v[8])
        if kind == "open" and len(data) == SIZE_STR1 and v[9] != RET_UNKNOWN:  # the hot path: one dict literal
            dirfd = v[12]
            raw = _s(data, SIZE_NUM)
            return {"id": new_event_id(self.node), "ts": v[0] + self.boot_to_wall, "node": self.node,
                    "kind": kind, "pid": v[3], "tid": v[4], "ppid": v[5] or None, "uid": v[6], "gid": v[7],
                    "comm": comm, "cgroup_id": v[1], "path": absolute(raw, None), "raw_path": raw,
                    "flags": v[10], "mode": v[11],
                    "ret": v[9], "dirfd": dirfd - (1 << 32) if (1 << 31) <= dirfd < (1 << 32) else dirfd,
                    DEDUP_HASH: v[13]}
        ev = {"id": new_event_id(self.node), "ts": v[0] + self.boot_to_wall, "node": self.node, "kind": kind,
              "pid": v[3], "tid": v[4], "ppid": v[5] or None, "uid": v[6], "gid": v[7], "comm": comm,
              "cgroup_id": v[1]}
        try:
            ev.update(_fields(kind, v[9:], data))
        except (ValueError, KeyError, IndexError) as e:  # a record too short for its kind's layout
            raise DecodeError(f"{kind} record of {len(data)} bytes: {type(e).__name__}: {e}") from None
        if kind in PATH_KINDS and len(data) > SIZE_NUM or kind in KEYED_DEDUP_KINDS:  # the kernel's dedup key
            ev[DEDUP_HASH] = v[13]
        if v[9] == RET_UNKNOWN:
            ev["ret"], ev["ret_unknown"] = 0, True
        return ev

    def _comm(self, raw: bytes) -> str:
        if len(self._comms) >= 4096:  # bounded cache of task names
            self._comms.clear()
        comm = self._comms[raw] = raw.partition(b"\0")[0].decode("utf-8", "replace")
        return comm
