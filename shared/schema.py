"""The event schema shared by every service on both sides of the bus.

An event is a flat dict with a common head plus kind-specific fields.
The enricher adds `proc`, `container` and `k8s` (null on the host):

    proc:      {"exe": str, "args": [str], "cmdline": str, "name": str, "cwd": str|None,
                "ppid": int, "pname": str, "pexe": str, "pcmdline": str,
                "ancestors": [{"pid", "comm", "exe", "args" (parent only)}, ...]}   # parent first, up to 8
    container: {"id": 64-hex, "name": str, "image": str, "runtime": "podman"|"docker"|
                "containerd"|"cri-o", "labels": {str: str}} | null
    k8s:       {"pod": str, "namespace": str, "labels": {}} | null

Kind "flow" is connects or accepts aggregated in the kernel per cgroup (pid 0;
services/probe/flows.py): `count` and `failed` are deltas since the last one.

Alerts travel in the same batch format with kind "alert":
    {"id", "ts", "node", "kind": "alert", "pid", "rule", "priority", "output",
     "tags": [...], "event": <the enriched event that matched>, "container", "k8s"}
"""
from __future__ import annotations

import itertools
import os
import time

# Fields every raw event carries (set by the probe).
HEAD_FIELDS = ("id", "ts", "node", "kind", "pid", "tid", "ppid", "uid", "gid", "comm", "cgroup_id")
REQUIRED_FIELDS = ("id", "ts", "node", "kind", "pid")

# Added by the enricher.
ENRICHED_FIELDS = ("proc", "container", "k8s")

# kind -> kind-specific fields (documentation and validation of presence).
# Set by the probe (services/probe/decode.py); None where the kernel side
# cannot know (e.g. connect saddr/sport, proto; module name). open, unlink,
# chmod and chdir "path" and exec "filename" are absolute and normalised
# (services/probe/paths.py; still as written when the kernel could not resolve
# the base); the argument as written is in "raw_path" / "raw_filename".
# rename/link/symlink paths are as the process passed them.
# Extras beyond these: chmod has "dirfd" or, for fchmod, "fd" (path None);
# unlink "dirfd", "flags"; rename/link "flags"; signal only for sig != 0 to
# another process; socket only for AF_PACKET or SOCK_RAW; dup only when
# oldfd is a socket or newfd is 0-2 (fd_type "socket" | "other"); chdir only
# on success, for fchdir with "fd" (path: the new working directory).
KINDS: dict[str, tuple[str, ...]] = {
    "exec": ("filename", "argv", "ret", "argv_truncated"),
    "exit": ("exit_code",),
    "fork": ("child_pid", "clone_flags"),
    "chdir": ("path", "ret"),
    "open": ("path", "flags", "mode", "ret", "dirfd"),
    "unlink": ("path", "ret"),
    "rename": ("oldpath", "newpath", "ret"),
    "chmod": ("path", "mode", "ret"),
    "symlink": ("target", "path", "ret"),
    "link": ("oldpath", "newpath", "ret"),
    "connect": ("family", "daddr", "dport", "saddr", "sport", "proto", "ret", "fd"),
    "accept": ("family", "daddr", "dport", "saddr", "sport", "proto", "ret", "fd"),
    "listen": ("family", "saddr", "sport", "ret", "fd", "backlog"),
    "socket": ("family", "type", "protocol", "ret"),
    "dup": ("syscall", "oldfd", "newfd", "fd_type", "ret"),
    "ptrace": ("request", "target_pid", "ret"),
    "setuid": ("syscall", "uid", "euid", "suid", "ret"),
    "setgid": ("syscall", "gid", "egid", "sgid", "ret"),
    "capset": ("ret",),
    "mount": ("source", "target", "fstype", "flags", "ret"),
    "bpf": ("cmd", "prog_type", "ret"),
    "module": ("syscall", "name", "fd", "ret", "params"),
    "memfd": ("name", "flags", "ret"),
    "unshare": ("flags", "ret"),
    "setns": ("fd", "nstype", "ret"),
    "signal": ("sig", "target_pid", "ret"),
    "flow": ("direction", "family", "proto", "daddr", "dport", "saddr", "sport", "count", "failed",
             "first_ts", "last_ts"),
}

# Families and other numeric constants rules and UIs want by name.
AF_NAMES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet"}

_seq = itertools.count()
_boot = f"{os.getpid():x}{time.time_ns() & 0xFFFFFFFF:08x}"


def new_event_id(node: str) -> str:
    """Unique id for dedupe: node, a per-process prefix and a sequence."""
    return f"{node}-{_boot}-{next(_seq):x}"


def missing_fields(ev: object) -> str | None:
    """Why `ev` is not a usable event, or None when it is."""
    if not isinstance(ev, dict):
        return f"event is {type(ev).__name__}, not an object"
    for f in REQUIRED_FIELDS:
        if f not in ev:
            return f"event lacks field {f!r}"
    if not isinstance(ev["kind"], str) or not ev["kind"]:
        return "field 'kind' is not a non-empty string"
    if not isinstance(ev["id"], str):
        return "field 'id' is not a string"
    if not isinstance(ev["ts"], int) or isinstance(ev["ts"], bool):
        return "field 'ts' is not an integer (ns)"
    return None
