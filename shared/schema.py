"""The event schema shared by every service on both sides of the bus.

An event is a flat dict with a common head plus kind-specific fields.
The enricher adds `proc`, `container` and `k8s` (null on the host):

    proc:      {"exe": str, "args": [str], "cmdline": str, "name": str, "cwd": str|None,
                "ppid": int, "pname": str, "pexe": str, "pcmdline": str,
                "ancestors": [{"pid", "comm", "exe", "args" (parent only)}, ...]}   # parent first, up to 8
    container: {"id": 64-hex, "name": str, "image": str, "runtime": "podman"|"docker"|
                "containerd"|"cri-o", "labels": {str: str},
                "image_digest": str|None, "image_id": str|None, "privileged": bool|None,
                "host_network", "host_pid", "host_ipc": bool|None,
                "mounts" (exec events only, when the runtime says): [{"source", "dest", "rw"}],
                "metadata_missing": None | reason the runtime gave no metadata} | null
    k8s:       {"pod": str, "namespace": str, "pod_uid": str|None, "container": str|None,
                "labels": {}, "owner": {"kind", "name"}|None, "workload": {"kind", "name"}|None} | null
    (a container without metadata has only id, name/image None, runtime, labels {} and
    metadata_missing; services/enricher/containers.py)

Connect, accept and flow events carry `dname`, the name the container
resolved the remote address from (its DNS answers, services/enricher/names.py), or null.

Kind "flow" is connects or accepts aggregated in the kernel per cgroup (pid 0;
services/probe/flows.py): `count` and `failed` are deltas since the last one.

Kind "profile" is one CPU-profile window of one cgroup (pid 0; services/probe/profiler.py):
`folded` {"comm;frame;...;frame_[k]": samples} of its heaviest stacks (the rest summed under
"[other stacks]"), `samples` in all, `truncated` those with cut-short user stacks, sampled at
`hz` from `start_ns` to `end_ns`.

Kind "oom" is an OOM kill (oom:mark_victim): the head names the task whose
allocation hit the limit (in a container, a task of that container), `victim_*`
the process the kernel kills.

Kind "cgroup" is a cgroup directory made (cgroup:cgroup_mkdir; the head names the task that
made it, usually a container runtime): `new_cgroup_id` (what events of tasks in it carry as
cgroup_id), `path` from the hierarchy's root, `level`, `hierarchy` (0: cgroup v2). The probe
sends every one; the enricher learns new container cgroups from them.

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
# rename/link "oldpath"/"newpath" and symlink "path" are absolute and normalised the
# same way (as written in "raw_oldpath"/"raw_newpath"/"raw_path"); a symlink's "target"
# is where it points, resolved against the link's directory ("raw_target": its contents).
# mprotect is sent only for W+X requests (PROT_WRITE|PROT_EXEC at once) of mprotect, mmap or
# pkey_mprotect ("syscall"; mmap adds "flags" and "fd", and its "ret" is the address mapped).
# Extras beyond these: chmod has "dirfd" or, for fchmod (and fchmodat2 with AT_EMPTY_PATH and ""),
# "fd" (path: the fd's file as the kernel walked it, "path_from_fd" True; None with "path_from_fd"
# False for a file of no directory tree, e.g. a memfd's; None alone when it could not be walked);
# unlink "dirfd", "flags"; rename/link "flags"; signal only for sig != 0 to
# another process; socket only for AF_PACKET or SOCK_RAW; dup only when
# oldfd is a socket or newfd is 0-2 (fd_type "socket" | "other"; a socket's "sock_origin"
# "socket" | "accepted" | "connected": how the fd became one, "unknown" for a socket made unseen); chdir only
# on success, for fchdir with "fd" (path: the new working directory). exec's "tty" is the controlling
# terminal (Falco's proc.tty, 0 none, None unknown), "cap_permitted" the permitted capability mask
# after the exec and "cap_bounding" its bounding set (shared/capabilities.py names the bits; None
# unknown). execenv goes out at execve
# entry, before its exec, only when a variable the rules watch is in envp: "env"
# {NAME: value} (the enricher keeps it as proc.env). setuid/setgid: the head's
# uid/gid are the caller's before the call, new_* the ids asked for (None:
# unchanged). chown and truncate have "dirfd" or, for fchown/ftruncate (and fchownat with
# AT_EMPTY_PATH and ""), "fd" (path as fchmod's; when None and not walked, the enricher names the
# file if it saw the open); chown by path "flags".
# procvm is process_vm_readv/writev on another process. iouring: an io_uring ring created ("op"
# "setup", its "fd") or a process's first request of a file or network operation through one
# ("op" the kernel's name, e.g. "openat", "connect"; what it names is not read).
# "ret_unknown": True on an event sent before its call returned (an ia32 call in the moment
# before the probe attaches its ia32 exit program); its "ret" is then 0 and evt.res UNKNOWN.
KINDS: dict[str, tuple[str, ...]] = {
    "exec": ("filename", "argv", "ret", "argv_truncated", "tty", "cap_permitted", "cap_bounding"),
    "execenv": ("env", "env_scanned", "env_truncated"),
    "exit": ("exit_code",),
    "fork": ("child_pid", "clone_flags"),
    "chdir": ("path", "ret"),
    "open": ("path", "flags", "mode", "ret", "dirfd"),
    "unlink": ("path", "ret"),
    "rename": ("oldpath", "newpath", "ret"),
    "chmod": ("path", "mode", "ret"),
    "mkdir": ("path", "mode", "ret"),
    "symlink": ("target", "path", "ret"),
    "link": ("oldpath", "newpath", "ret"),
    "connect": ("family", "daddr", "dport", "saddr", "sport", "proto", "ret", "fd"),
    "accept": ("family", "daddr", "dport", "saddr", "sport", "proto", "ret", "fd"),
    "listen": ("family", "saddr", "sport", "ret", "fd", "backlog"),
    "socket": ("family", "type", "protocol", "ret"),
    # dns: a message to or from port 53 (bpf/dns.bpf.c). The probe sends `payload` (base64);
    # the enricher (services/enricher/dns.py) replaces it with the parsed fields of DNS_FIELDS.
    "dns": ("direction", "family", "proto", "saddr", "sport", "daddr", "dport", "len", "truncated"),
    "dup": ("syscall", "oldfd", "newfd", "fd_type", "sock_origin", "ret"),
    "ptrace": ("request", "target_pid", "ret"),
    "setuid": ("syscall", "new_uid", "new_euid", "new_suid", "ret"),
    "setgid": ("syscall", "new_gid", "new_egid", "new_sgid", "ret"),
    "chown": ("path", "owner_uid", "owner_gid", "ret"),
    "truncate": ("path", "length", "ret"),
    "procvm": ("syscall", "target_pid", "riovcnt", "ret"),
    "umount": ("target", "flags", "ret"),
    "mprotect": ("syscall", "addr", "len", "prot", "ret"),
    "userfaultfd": ("flags", "ret"),
    "iouring": ("op", "opcode", "fd", "sq_entries", "flags", "sq_thread", "ret"),
    "capset": ("ret",),
    "mount": ("source", "target", "fstype", "flags", "ret"),
    "bpf": ("cmd", "prog_type", "ret"),
    "module": ("syscall", "name", "fd", "ret", "params"),
    "memfd": ("name", "flags", "ret"),
    "unshare": ("flags", "ret"),
    "setns": ("fd", "nstype", "ret"),
    "signal": ("sig", "target_pid", "ret"),
    "oom": ("victim_pid", "victim_comm", "victim_uid", "total_vm_kb", "anon_rss_kb", "file_rss_kb"),
    "cgroup": ("new_cgroup_id", "path", "level", "hierarchy"),
    "profile": ("start_ns", "end_ns", "hz", "samples", "truncated", "stacks_dropped", "folded"),
    "flow": ("direction", "family", "proto", "daddr", "dport", "saddr", "sport", "count", "failed",
             "first_ts", "last_ts"),
}

# dns fields the enricher adds: transaction id, question, answer code, answers (addresses and
# names), smallest answer TTL (s), query->answer latency (answers only), why a message did not parse.
DNS_FIELDS = ("txid", "qname", "qtype", "rcode", "answers", "ttl", "latency_ns", "malformed")

# Families and other numeric constants rules and UIs want by name.

_seq = itertools.count()
_boot = f"{os.getpid():x}{time.time_ns() & 0xFFFFFFFF:08x}"


def new_event_id(node: str) -> str:
    """Unique id for dedupe: node, a per-process prefix and a sequence."""
    return f"{node}-{_boot}-{next(_seq):x}"


def event_text(s: str) -> str:
    """`s` as an event carries text: UTF-8, with what is not (an OS name's undecodable bytes,
    held by Python as lone surrogates) as U+FFFD, as the probe decodes the kernel's strings."""
    try:
        raw = s.encode("utf-8", "surrogateescape")  # the bytes an OS name stood for
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


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
