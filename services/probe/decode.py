"""Raw ring-buffer records (bpf/common.h layouts) -> event dicts (shared/schema.py).

The record size names the shape (numbers only, 1/2/3 strings, sockaddr,
exec); the kind in the head says what the numbers a[0..5] mean. Kind numbers
are read from bpf/common.h, so they are defined in one place.
"""
from __future__ import annotations

import base64
import os
import posixpath
import re
import socket
import struct
import time
from pathlib import Path

from shared.filterplan import PATH_KINDS
from shared.netnames import IP_PROTO_NAMES, ip_text, sock_proto
from shared.schema import new_event_id

from .loader import BPF_DIR
from .paths import absolute

HEAD = struct.Struct("<QQIIIIII16s6q")  # struct ev_head + s64 a[6]
STR_SZ, STR3_SZ, SA_SZ, ARGV_SZ, ARG_MAX_LEN = 256, 32, 128, 1024, 256
SIZE_NUM = HEAD.size
SIZE_STR1 = SIZE_NUM + STR_SZ
SIZE_STR2 = SIZE_STR1 + STR_SZ
SIZE_STR3 = SIZE_STR2 + STR3_SZ
SIZE_PATH2 = SIZE_STR2 + 2 * STR_SZ  # struct ev_path2: s1, s2, then their base directories b1, b2
SIZE_SOCK = SIZE_NUM + SA_SZ + 16
SIZE_EXEC = SIZE_NUM + STR_SZ + ARGV_SZ + ARG_MAX_LEN + STR_SZ  # ... filename, argv, base
ENV_SLOTS, ENV_VAL_SZ = 4, 256  # struct ev_env
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


def _base(data: bytes) -> str | None:
    """s2 of a path kind's record: the directory a relative path is relative to."""
    return _s(data, SIZE_STR1) if len(data) >= SIZE_STR2 else None


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




DNS_PAYLOAD_SZ = 512


def _dns(a: tuple, data: bytes) -> dict:
    """struct ev_dns: the raw DNS message goes on as base64; services/enricher/dns.py parses it."""
    family = a[3]
    addrs = data[SIZE_NUM:SIZE_NUM + 32]
    copied = max(0, min(a[1], DNS_PAYLOAD_SZ, len(data) - SIZE_NUM - 32))
    payload = data[SIZE_NUM + 32:SIZE_NUM + 32 + copied]
    return {"direction": "answer" if a[2] else "query", "family": family,
            "proto": IP_PROTO_NAMES.get(a[4]), "saddr": ip_text(family, addrs[:16]), "sport": (a[5] >> 16) & 0xFFFF,
            "daddr": ip_text(family, addrs[16:]), "dport": a[5] & 0xFFFF, "len": a[0],
            "truncated": a[0] > copied, "payload": base64.b64encode(payload).decode()}


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


def _fields(kind: str, a: tuple, data: bytes) -> dict:
    """Kind-specific fields from the numbers `a` and the string area of `data`."""
    n = len(data)
    ret = a[0]
    if kind == "open":
        raw = _s(data, SIZE_NUM)
        return {"path": absolute(raw, _base(data)), "raw_path": raw, "flags": a[1], "mode": a[2], "ret": ret,
                "dirfd": _i32(a[3])}
    if kind == "exec":
        argv = data[SIZE_STR1:SIZE_STR1 + a[1]].split(b"\0")[:a[2]]
        raw = _s(data, SIZE_NUM)
        base = _s(data, SIZE_STR1 + ARGV_SZ + ARG_MAX_LEN) if n >= SIZE_EXEC else None
        return {"filename": absolute(raw, base), "raw_filename": raw,
                "argv": [x.decode("utf-8", "replace") for x in argv], "argv_truncated": bool(a[3]), "ret": ret,
                "tty": a[4] if a[4] >= 0 else None, "cap_permitted": a[5] if a[5] >= 0 else None,
                "cap_bounding": _caps(data, SIZE_EXEC) if n >= SIZE_EXEC + 8 else None}
    if kind == "execenv":
        env = {}
        for i in range(min(a[3], ENV_SLOTS)):
            name, eq, value = _s(data, SIZE_NUM + i * ENV_VAL_SZ, ENV_VAL_SZ).partition("=")
            if eq:
                env.setdefault(name, value)
        return {"env": env, "env_scanned": a[1], "env_truncated": bool(a[2])}
    if kind == "exit":
        return {"exit_code": a[1] if a[1] >= 0 else None}
    if kind == "fork":
        return {"child_pid": a[1], "clone_flags": a[2]}
    if kind == "chdir":  # s2: the new working directory, walked by the kernel ("" if unknown)
        raw = _s(data, SIZE_NUM) if n >= SIZE_STR1 else ""
        cwd = _s(data, SIZE_STR1) if n >= SIZE_STR2 else ""
        if a[2] == 1 or n == SIZE_NUM:  # fchdir: an fd
            return {"path": cwd or None, "raw_path": None, "ret": ret, "fd": a[1]}
        return {"path": cwd or raw, "raw_path": raw, "ret": ret}
    if kind == "unlink":
        raw = _s(data, SIZE_NUM)
        return {"path": absolute(raw, _base(data)), "raw_path": raw, "ret": ret, "dirfd": _i32(a[1]),
                "flags": a[2]}
    if kind in ("rename", "link", "symlink"):
        old, new = _s(data, SIZE_NUM), _s(data, SIZE_STR1)
        b_old, b_new = (_s(data, SIZE_STR2), _s(data, SIZE_STR2 + STR_SZ)) if n >= SIZE_PATH2 else (None, None)
        if kind == "symlink":  # the target, as the link resolves it: relative to the link's directory
            path = absolute(new, b_new)
            return {"target": absolute(old, posixpath.dirname(path) if path.startswith("/") else None),
                    "raw_target": old, "path": path, "raw_path": new, "ret": ret}
        return {"oldpath": absolute(old, b_old), "newpath": absolute(new, b_new), "raw_oldpath": old,
                "raw_newpath": new, "ret": ret, "flags": a[1]}
    if kind == "mkdir":
        raw = _s(data, SIZE_NUM)
        return {"path": absolute(raw, _base(data)), "raw_path": raw, "mode": a[1], "ret": ret, "dirfd": _i32(a[2])}
    if kind == "chmod":
        if n == SIZE_NUM:  # fchmod: no path, an fd
            return {"path": None, "mode": a[1], "ret": ret, "fd": a[2]}
        raw = _s(data, SIZE_NUM)
        return {"path": absolute(raw, _base(data)), "raw_path": raw, "mode": a[1], "ret": ret,
                "dirfd": _i32(a[2])}
    if kind in ("connect", "accept", "listen"):
        family, addr, port = _sockaddr(data[SIZE_NUM:SIZE_NUM + SA_SZ])
        la = data[SIZE_NUM + SA_SZ:SIZE_SOCK]
        if kind == "connect":
            return {"family": family, "daddr": addr, "dport": port, "saddr": None, "sport": None,
                    "proto": sock_proto(family, a[3]), "ret": ret, "fd": _i32(a[1])}
        lfamily = a[4] or family
        if kind == "accept":
            return {"family": family or lfamily, "daddr": addr, "dport": port, "saddr": ip_text(lfamily, la),
                    "sport": a[3] or None, "proto": sock_proto(family or lfamily, a[2]), "ret": ret,
                    "fd": _i32(a[1])}
        return {"family": lfamily, "saddr": ip_text(lfamily, la), "sport": a[3] or None, "ret": ret,
                "fd": a[1], "backlog": a[2]}
    if kind == "dns":
        return _dns(a, data)
    if kind == "socket":
        return {"family": a[1], "type": a[2], "protocol": a[3], "ret": ret}
    if kind == "dup":
        return {"syscall": DUP_SYSCALLS[a[4] % 3], "oldfd": a[1], "newfd": a[2],
                "fd_type": "socket" if a[3] else "other",
                "sock_origin": SOCK_ORIGINS.get(a[5], "unknown") if a[3] else None, "ret": ret}
    if kind == "ptrace":
        return {"request": a[1], "target_pid": _i32(a[2]), "ret": ret}
    if kind in ("setuid", "setgid"):
        # the requested ids as new_*; the head's uid/gid become the caller's before the
        # call (a[5]), as Falco's user.uid on the syscall's enter side
        x = kind[3]  # "u" or "g"
        return {"syscall": SETID_SYSCALLS[a[4] % 3].format(x=x), f"new_{x}id": _id(a[1]),
                f"new_e{x}id": _id(a[2]), f"new_s{x}id": _id(a[3]), "ret": ret,
                "uid": a[5] & 0xFFFFFFFF, "gid": (a[5] >> 32) & 0xFFFFFFFF}
    if kind == "chown":
        if n == SIZE_NUM:  # fchown: no path, an fd
            return {"path": None, "owner_uid": _id(a[1]), "owner_gid": _id(a[2]), "ret": ret, "fd": a[3]}
        return {"path": _s(data, SIZE_NUM), "owner_uid": _id(a[1]), "owner_gid": _id(a[2]), "ret": ret,
                "dirfd": _i32(a[3]), "flags": a[5]}
    if kind == "truncate":
        if n == SIZE_NUM:  # ftruncate: an fd (the enricher names its file when it saw the open)
            return {"path": None, "length": a[1], "ret": ret, "fd": a[2]}
        return {"path": _s(data, SIZE_NUM), "length": a[1], "ret": ret, "dirfd": _i32(a[2])}
    if kind == "procvm":
        return {"syscall": "process_vm_writev" if a[2] else "process_vm_readv", "target_pid": _i32(a[1]),
                "riovcnt": a[3], "ret": ret}
    if kind == "umount":
        return {"target": _s(data, SIZE_NUM), "flags": a[1], "ret": ret}
    if kind == "mprotect":  # W+X requests only (bpf/kernel.bpf.c wx_stash)
        syscall = WX_SYSCALLS[(a[3] >> 32) % len(WX_SYSCALLS)]
        mmap = syscall == "mmap"
        return {"syscall": syscall, "addr": a[1] & 0xFFFFFFFFFFFFFFFF, "len": a[2], "prot": a[3] & 0xFFFFFFFF,
                "flags": a[4] if mmap else None, "fd": _i32(a[5]) if mmap and _i32(a[5]) >= 0 else None,
                "ret": ret}  # mmap: the address mapped
    if kind == "iouring":  # bpf/kernel.bpf.c: the ring's creation, or a process's first request of an operation
        return {"op": _s(data, SIZE_NUM, 32).lower() or IORING_OPS.get(a[1], f"op{a[1]}"),
                "opcode": a[1] if a[1] >= 0 else None,
                "fd": _i32(a[2]) if a[1] < 0 else None, "sq_entries": a[3] if a[1] < 0 else None,
                "flags": a[4], "sq_thread": bool(a[5]), "ret": ret}
    if kind == "userfaultfd":
        return {"flags": a[1], "ret": ret}
    if kind == "capset":
        return {"ret": ret}
    if kind == "unshare":
        return {"flags": a[1], "ret": ret}
    if kind == "setns":
        return {"fd": _i32(a[1]), "nstype": a[2], "ret": ret}
    if kind == "signal":
        return {"sig": a[2], "target_pid": _i32(a[1]), "ret": ret}
    if kind == "mount":
        return {"source": _s(data, SIZE_NUM), "target": _s(data, SIZE_STR1),
                "fstype": _s(data, SIZE_STR2, STR3_SZ), "flags": a[1], "ret": ret}
    if kind == "bpf":
        return {"cmd": a[1], "prog_type": a[2] if a[2] >= 0 else None, "ret": ret}
    if kind == "module":
        return {"syscall": "finit_module" if a[3] == 1 else "init_module", "name": None,
                "params": _s(data, SIZE_NUM), "fd": _i32(a[1]) if _i32(a[1]) >= 0 else None, "ret": ret}
    if kind == "memfd":
        return {"name": _s(data, SIZE_NUM), "flags": a[1], "ret": ret}
    if kind == "oom":
        kb = PAGE_KB
        return {"victim_pid": a[1], "victim_comm": _s(data, SIZE_NUM), "victim_uid": a[5],
                "total_vm_kb": a[2] * kb, "anon_rss_kb": a[3] * kb, "file_rss_kb": a[4] * kb}
    return {}


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
        ev.update(_fields(kind, v[9:], data))
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
