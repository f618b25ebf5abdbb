"""Rule fields (`proc.name`, `fd.name`, ...) and how to read each from an
enriched event (shared/schema.py). Every extractor takes the event dict and
returns the value, or None when the event does not carry it.

Types: "str", "int", "bool", "kind" (evt.type), "net" (fd.net family: a list
of IPs compared against CIDRs), "any" (evt.arg.*: int or str). `many=True`
fields return a list and a comparison holds when it holds for any element.
"""
from __future__ import annotations

import errno
import functools
import ipaddress
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from shared.capabilities import cap_list
from shared.netnames import IP_PROTO_NAMES, SOCK_TYPE_PROTO
from shared.schema import KINDS

Event = dict[str, Any]                 # an enriched event (decoded JSON)
Extractor = Callable[[Event], Any]
_E: dict[str, Any] = {}  # read-only stand-in for a missing sub-object

O_ACCMODE, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 3, 1, 2, 0o100, 0o1000


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    get: Extractor
    many: bool = False
    doc: str = ""
    inline: str = ""       # the same read as a Python expression over `ev` (hot fields)


# --- process -------------------------------------------------------------

def _proc(ev: Event) -> dict[str, Any]:
    return ev.get("proc") or _E


def _args(ev: Event) -> list[Any] | None:
    a = _proc(ev).get("args")
    if a is None and ev.get("kind") == "exec":
        a = ev.get("argv")
    return a


def proc_name(ev: Event) -> str | None:
    return _proc(ev).get("name") or ev.get("comm")


def _join_cmdline(name: str | None, args: list[Any] | None) -> str | None:
    if name is None:
        return None
    if args and len(args) > 1:
        return name + " " + " ".join(map(str, args[1:]))
    return name


def proc_cmdline(ev: Event) -> str | None:
    args = _args(ev)
    if args is None:
        return _proc(ev).get("cmdline") or proc_name(ev)
    return _join_cmdline(proc_name(ev), args)


def proc_args(ev: Event) -> str | None:
    args = _args(ev)
    return None if args is None else " ".join(map(str, args[1:]))


def proc_exe(ev: Event) -> str | None:
    exe = _proc(ev).get("exe")
    if exe is None and ev.get("kind") == "exec":
        exe = ev.get("filename")
    return exe


def _ancestors(ev: Event) -> Sequence[dict[str, Any]]:
    return _proc(ev).get("ancestors") or ()


def proc_ppid(ev: Event) -> int | None:
    p = _proc(ev).get("ppid")
    return ev.get("ppid") if p is None else p


def proc_pname(ev: Event) -> str | None:
    p = _proc(ev).get("pname")
    if p is None:
        anc = _ancestors(ev)
        p = anc[0].get("comm") if anc else None
    return p


def proc_pexe(ev: Event) -> str | None:
    p = _proc(ev).get("pexe")
    if p is None:
        anc = _ancestors(ev)
        p = anc[0].get("exe") if anc else None
    return p


def proc_pcmdline(ev: Event) -> str | None:
    p = _proc(ev).get("pcmdline")
    if p is None:
        anc = _ancestors(ev)
        if anc:
            p = _join_cmdline(anc[0].get("comm"), anc[0].get("args"))
    return p


def proc_anames(ev: Event) -> list[Any]:
    anc = _ancestors(ev)
    if anc:
        return [a.get("comm") for a in anc]
    p = proc_pname(ev)
    return [p] if p is not None else []


def proc_aexes(ev: Event) -> list[Any]:
    anc = _ancestors(ev)
    if anc:
        return [a.get("exe") for a in anc]
    p = proc_pexe(ev)
    return [p] if p is not None else []


def proc_apids(ev: Event) -> list[Any]:
    anc = _ancestors(ev)
    if anc:
        return [a.get("pid") for a in anc]
    p = proc_ppid(ev)
    return [p] if p is not None else []


def _aname_at(n: int) -> Extractor:
    if n == 0:
        return proc_name
    if n == 1:
        return proc_pname

    def get(ev: Event) -> str | None:
        anc = _ancestors(ev)
        return anc[n - 1].get("comm") if len(anc) >= n else None
    return get


def _apid_at(n: int) -> Extractor:
    if n == 0:
        return lambda ev: ev.get("pid")
    if n == 1:
        return proc_ppid

    def get(ev: Event) -> int | None:
        anc = _ancestors(ev)
        return anc[n - 1].get("pid") if len(anc) >= n else None
    return get


def _exec_fact(key: str) -> Extractor:
    """Facts the alerter's state puts on an exec's proc; false when absent."""
    return lambda ev: bool(_proc(ev).get(key)) if ev.get("kind") == "exec" else None


# --- event ---------------------------------------------------------------

def evt_time(ev: Event) -> str | None:
    ts = ev.get("ts")
    if not isinstance(ts, int):
        return None
    return time.strftime("%H:%M:%S", time.gmtime(ts // 1_000_000_000)) + f".{ts % 1_000_000_000:09d}"


def evt_res(ev: Event) -> str | None:
    r = ev.get("ret")
    if not isinstance(r, int):
        return None
    if ev.get("ret_unknown"):  # reported before the call returned (judged as if it succeeded)
        return "UNKNOWN"
    return "SUCCESS" if r >= 0 else errno.errorcode.get(-r, str(r))


def evt_failed(ev: Event) -> bool | None:
    r = ev.get("ret")
    return None if not isinstance(r, int) else r < 0


def _open_flags(ev: Event) -> int | None:
    if ev.get("kind") != "open":
        return None
    f = ev.get("flags")
    return f if isinstance(f, int) else None


def is_open_write(ev: Event) -> bool | None:
    if ev.get("kind") != "open":
        return None
    f = ev.get("flags")
    if f.__class__ is not int:
        return None
    return (f & O_ACCMODE) in (O_WRONLY, O_RDWR) or bool(f & O_TRUNC)


def is_open_read(ev: Event) -> bool | None:
    if ev.get("kind") != "open":
        return None
    f = ev.get("flags")
    if f.__class__ is not int:
        return None
    return (f & O_ACCMODE) in (0, O_RDWR)


def is_open_create(ev: Event) -> bool | None:
    f = _open_flags(ev)
    return None if f is None else bool(f & O_CREAT)


def is_open_trunc(ev: Event) -> bool | None:
    f = _open_flags(ev)
    return None if f is None else bool(f & O_TRUNC)


def is_open_exec(ev: Event) -> bool | None:
    f = _open_flags(ev)
    if f is None:
        return None
    mode = ev.get("mode")
    return bool(f & O_CREAT) and isinstance(mode, int) and bool(mode & 0o111)


# --- fd ------------------------------------------------------------------

_FAMILY = {1: "unix", 2: "ipv4", 10: "ipv6", 16: "netlink", 17: "packet",
           "unix": "unix", "inet": "ipv4", "inet6": "ipv6", "ipv4": "ipv4", "ipv6": "ipv6",
           "netlink": "netlink", "packet": "packet", "AF_UNIX": "unix", "AF_INET": "ipv4",
           "AF_INET6": "ipv6", "AF_NETLINK": "netlink", "AF_PACKET": "packet"}
_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u", "netlink": "n",
             "packet": "p", "memfd": "m", "pipe": "p", "bpf": "b"}
_NET_KINDS = frozenset(("connect", "accept", "listen", "socket"))
_PATH_KINDS = frozenset(("open", "unlink", "chmod", "rename", "link", "symlink", "chown", "truncate", "mkdir"))


def _endpoint(ip: Any, port: Any) -> str:
    ip = "" if ip is None else str(ip)
    if ":" in ip:
        ip = f"[{ip}]"
    return f"{ip}:{'' if port is None else port}"


def fd_nameraw(ev: Event) -> str | None:
    raw = ev.get("raw_newpath") if ev.get("kind") in ("rename", "link") else ev.get("raw_path")
    return raw if isinstance(raw, str) else fd_name(ev)


def fd_name(ev: Event) -> str | None:
    k = ev.get("kind")
    if k == "open" or k == "unlink" or k == "chmod" or k == "symlink" or k == "chown" or k == "truncate" \
            or k == "mkdir":
        return ev.get("path")
    if k == "rename" or k == "link":
        return ev.get("newpath")
    if k == "connect" or k == "accept":
        if _FAMILY.get(ev.get("family")) == "unix":
            return ev.get("daddr") or ev.get("saddr")
        local = ev.get("saddr"), ev.get("sport")
        local_s = "" if local == (None, None) else _endpoint(*local)   # connect: local end often unknown
        return local_s + "->" + _endpoint(ev.get("daddr"), ev.get("dport"))
    if k == "listen":
        return _endpoint(ev.get("saddr"), ev.get("sport"))
    if k == "memfd":
        n = ev.get("name")
        return None if n is None else "memfd:" + str(n)
    return None


def fd_type(ev: Event) -> str | None:
    k = ev.get("kind")
    if k in _PATH_KINDS:
        return "file"
    if k in _NET_KINDS:
        return _FAMILY.get(ev.get("family"))
    if k == "memfd":
        return "memfd"
    if k == "dup":
        return ev.get("fd_type")
    return None


def fd_typechar(ev: Event) -> str | None:
    t = fd_type(ev)
    return None if t is None else _TYPECHAR.get(t, "o")


def _path(ev: Event) -> str | None:
    return fd_name(ev) if ev.get("kind") in _PATH_KINDS else None


def fd_directory(ev: Event) -> str | None:
    p = _path(ev)
    if p is None:
        return None
    d = os.path.dirname(p)
    return d or ("/" if p.startswith("/") else ".")


def fd_filename(ev: Event) -> str | None:
    p = _path(ev)
    return None if p is None else os.path.basename(p)


@functools.lru_cache(maxsize=4096)
def _canon_ip(text: str) -> str:
    """An address as rules compare it: an IPv4-mapped IPv6 address
    (::ffff:a.b.c.d, which reaches the IPv4 host) as its IPv4 form, every
    IPv6 address in its compressed form."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return text
    if a.version == 6 and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def canon_ip(v: Any) -> Any:
    return _canon_ip(v) if v.__class__ is str and ":" in v else v


IP_FIELDS = frozenset(("fd.sip", "fd.cip", "fd.lip", "fd.rip", "fd.dip"))


def _net(ev: Event, accept_key: str, connect_key: str) -> Any:
    """Falco's client/server view: on connect we are the client (s* raw
    fields are ours, d* the server's); on accept/listen we are the server.
    Addresses are canonical (canon_ip)."""
    k = ev.get("kind")
    if k == "connect":
        return canon_ip(ev.get(connect_key))
    if k == "accept" or k == "listen":
        return canon_ip(ev.get(accept_key))
    return None


def _net_field(accept_key: str, connect_key: str) -> Extractor:
    return lambda ev: _net(ev, accept_key, connect_key)


def _raw_net(key: str) -> Extractor:
    return lambda ev: canon_ip(ev.get(key)) if ev.get("kind") in _NET_KINDS else None


def fd_ips(ev: Event) -> list[Any]:
    if ev.get("kind") not in _NET_KINDS:
        return []
    return [canon_ip(ip) for ip in (ev.get("saddr"), ev.get("daddr")) if ip]


def fd_l4proto(ev: Event) -> str | None:
    k = ev.get("kind")
    if k not in _NET_KINDS:
        return None
    p = ev.get("proto") if k != "socket" else ev.get("protocol")
    if p:
        return IP_PROTO_NAMES.get(p, str(p))
    if k == "socket" and _FAMILY.get(ev.get("family")) in ("ipv4", "ipv6"):
        t = ev.get("type")
        return SOCK_TYPE_PROTO.get(t & 0xF) if isinstance(t, int) else None
    return None


# --- user / group --------------------------------------------------------

def _read_names(path: str) -> dict[int, str]:
    names: dict[int, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    names.setdefault(int(parts[2]), parts[0])
    except OSError:
        pass
    names[0] = "root"
    return names


_users: dict[int, str] | None = None
_groups: dict[int, str] | None = None


def user_name(ev: Event) -> str | None:
    global _users
    uid = ev.get("uid")
    if not isinstance(uid, int):
        return None
    if _users is None:
        _users = _read_names("/etc/passwd")
    return _users.get(uid)


def group_name(ev: Event) -> str | None:
    global _groups
    gid = ev.get("gid")
    if not isinstance(gid, int):
        return None
    if _groups is None:
        _groups = _read_names("/etc/group")
    return _groups.get(gid)


# --- container / k8s -----------------------------------------------------

def _ctr(ev: Event) -> dict[str, Any] | None:
    return ev.get("container")


def container_id(ev: Event) -> str | None:
    c = _ctr(ev)
    if not c:
        return "host"
    i = c.get("id")
    return i[:12] if isinstance(i, str) else i


def container_full_id(ev: Event) -> str | None:
    c = _ctr(ev)
    return "host" if not c else c.get("id")


def container_name(ev: Event) -> str | None:
    c = _ctr(ev)
    return "host" if not c else c.get("name")


def container_image(ev: Event) -> str | None:
    return (_ctr(ev) or _E).get("image")


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """"reg/repo:tag@sha256:..." -> (reg/repo, tag, digest)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:], digest
    return image, None, digest


def container_image_repository(ev: Event) -> str | None:
    i = container_image(ev)
    return None if not isinstance(i, str) else _split_image(i)[0]


def container_image_tag(ev: Event) -> str | None:
    i = container_image(ev)
    return None if not isinstance(i, str) else _split_image(i)[1]


def container_image_digest(ev: Event) -> str | None:
    d: str | None = (_ctr(ev) or _E).get("image_digest")   # the runtime's word (CRI image_ref) first
    if d:
        return d
    i = container_image(ev)
    return None if not isinstance(i, str) else _split_image(i)[2]


def _ctr_key(key: str) -> Extractor:
    return lambda ev: (ev.get("container") or _E).get(key)


def _mount_part(part: str) -> Extractor:
    def get(ev: Event) -> list[str]:
        mounts = (ev.get("container") or _E).get("mounts")
        return [m[part] for m in mounts if isinstance(m, dict) and isinstance(m.get(part), str)] \
            if isinstance(mounts, list) else []
    return get


def container_mounts(ev: Event) -> str | None:
    mounts = (ev.get("container") or _E).get("mounts")
    if not isinstance(mounts, list):
        return None
    return ", ".join(f"{m.get('source')}:{m.get('dest')}:{'rw' if m.get('rw') else 'ro'}"
                     for m in mounts if isinstance(m, dict))


def _caps(key: str) -> Extractor:
    def get(ev: Event) -> Sequence[str]:
        mask = ev.get(key)
        return cap_list(mask) if mask.__class__ is int and mask >= 0 else ()
    return get


cap_permitted = _caps("cap_permitted")


def _k8s_ref(key: str, part: str) -> Extractor:
    """k8s.owner / k8s.workload {"kind", "name"} parts."""
    return lambda ev: ((ev.get("k8s") or _E).get(key) or _E).get(part)


def _k8s_owned_by(kind: str) -> Extractor:
    """Name of the pod's owner of `kind` (ReplicaSet, Deployment, ...) in its derived owner chain."""
    def get(ev: Event) -> str | None:
        k = ev.get("k8s")
        if not k:
            return None
        for ref in (k.get("owner"), k.get("workload")):
            if ref and ref.get("kind") == kind:
                name: str | None = ref.get("name")
                return name
        return None
    return get


def k8s_pod_labels(ev: Event) -> str | None:
    """Falco's k8s.pod.labels: "k1:v1, k2:v2"."""
    labels = (ev.get("k8s") or _E).get("labels")
    return None if labels is None else ", ".join(f"{k}:{v}" for k, v in sorted(labels.items()))


def container_info(ev: Event) -> str:
    c = _ctr(ev)
    if not c:
        return "host"
    return f"container_id={container_id(ev)} container_name={c.get('name')} image={c.get('image')}"


def _label(obj_key: str, label: str) -> Extractor:
    def get(ev: Event) -> str | None:
        o = ev.get(obj_key)
        return (o.get("labels") or _E).get(label) if o else None
    return get


def proc_env(ev: Event) -> str | None:
    """The watched variables of the exec environment as 'NAME=value ...' (None: not captured)."""
    env = _proc(ev).get("env")
    if env is None:
        return None
    return " ".join(f"{k}={v}" for k, v in env.items())


def _env_var(name: str) -> Extractor:
    return lambda ev: (_proc(ev).get("env") or _E).get(name)


def _k8s(key: str) -> Extractor:
    return lambda ev: (ev.get("k8s") or _E).get(key)


def _head(key: str) -> Extractor:
    return lambda ev: ev.get(key)


# --- the table -----------------------------------------------------------

FIELDS: dict[str, Field] = {}


def _add(name: str, type_: str, get: Extractor, doc: str, many: bool = False) -> None:
    FIELDS[name] = Field(name, type_, get, many, doc, _INLINE.get(name, ""))


# Inlined into generated code to save a call per read; must equal the extractor.
_INLINE = {
    "evt.type": 'ev.get("kind")', "evt.rawtime": 'ev.get("ts")', "evt.rawres": 'ev.get("ret")',
    "proc.pid": 'ev.get("pid")', "thread.tid": 'ev.get("tid")', "user.uid": 'ev.get("uid")',
    "group.gid": 'ev.get("gid")', "proc.comm": 'ev.get("comm")',
    "proc.name": '((ev.get("proc") or _E).get("name") or ev.get("comm"))',
    "proc.cwd": '(ev.get("proc") or _E).get("cwd")', "proc.tty": '(ev.get("proc") or _E).get("tty")',
    "container.image": '(ev.get("container") or _E).get("image")',
    "k8s.ns.name": '(ev.get("k8s") or _E).get("namespace")', "k8s.pod.name": '(ev.get("k8s") or _E).get("pod")',
}


_add("evt.type", "kind", _head("kind"), "event kind (Falco syscall names accepted as aliases)")
_add("evt.time", "str", evt_time, "event time HH:MM:SS.nnnnnnnnn (UTC)")
_add("evt.rawtime", "int", _head("ts"), "event time, ns since the epoch")
_add("evt.dir", "str", lambda ev: "<", "always '<' (events are syscall exits)")
_add("evt.res", "str", evt_res, "SUCCESS, the errno name (ENOENT, ...) or UNKNOWN (reported before it returned)")
_add("evt.rawres", "int", _head("ret"), "syscall return value")
_add("evt.failed", "bool", evt_failed, "true when the syscall returned an error")
_add("evt.is_open_read", "bool", is_open_read, "open for reading")
_add("evt.is_open_write", "bool", is_open_write, "open for writing (O_WRONLY, O_RDWR or O_TRUNC)")
_add("evt.is_open_create", "bool", is_open_create, "open with O_CREAT")
_add("evt.is_open_exec", "bool", is_open_exec, "open creating an executable file")
_add("evt.is_open_trunc", "bool", is_open_trunc, "open with O_TRUNC (truncates the file)")
_add("evt.id", "str", _head("id"), "event id")
_add("evt.node", "str", _head("node"), "node name")
_add("proc.name", "str", proc_name, "process name (enricher: basename of exe; else comm)")
_add("proc.exe", "str", proc_exe, "executable path")
_add("proc.exepath", "str", proc_exe, "executable path")
_add("proc.cmdline", "str", proc_cmdline, "'name arg1 arg2 ...'")
_add("proc.args", "str", proc_args, "arguments without argv[0]")
_add("proc.pid", "int", _head("pid"), "process id")
_add("proc.ppid", "int", proc_ppid, "parent process id")
_add("proc.pname", "str", proc_pname, "parent name")
_add("proc.pexe", "str", proc_pexe, "parent executable")
_add("proc.pcmdline", "str", proc_pcmdline, "parent command line")
_add("proc.aname", "str", proc_anames, "any ancestor's name; proc.aname[N] is the Nth (0 = self)", many=True)
_add("proc.aexe", "str", proc_aexes, "any ancestor's executable path (parent first)", many=True)
_add("proc.apid", "int", proc_apids, "any ancestor's pid; proc.apid[N] is the Nth (0 = self)", many=True)
_add("proc.cwd", "str", lambda ev: _proc(ev).get("cwd"), "working directory")
_add("proc.tty", "int", lambda ev: _proc(ev).get("tty"),
     "controlling tty (as /proc/<pid>/stat tty_nr; 0 none); None when unknown")
_add("proc.env", "str", proc_env,
     "exec environment variables the rules watch, 'NAME=value ...'; proc.env[NAME] is one value")
# Set by the alerter (services/alerter/state.py) from what it saw earlier in the same container.
_add("proc.is_exe_upper_layer", "bool", _exec_fact("is_exe_upper_layer"),
     "exec of a file created in the container after it started (set by the alerter's state)")
_add("proc.is_exe_from_memfd", "bool", _exec_fact("is_exe_from_memfd"),
     "fileless exec from a memfd (set by the alerter's state)")
# Set by the enricher (services/enricher/proctable.py) from the process lineage it saw, never from names.
_add("proc.is_container_runtime", "bool", lambda ev: bool(_proc(ev).get("is_container_runtime")),
     "runs the container runtime's own code (runc, crun, conmon, shims): it exec'd a runtime executable "
     "(host path) from a host cgroup, or is a fork or self re-exec of such a process")
_add("proc.is_container_entrypoint", "bool", lambda ev: bool(_proc(ev).get("is_container_entrypoint")),
     "exec'd by the container runtime itself (the entrypoint, or the command of podman/kubectl exec), "
     "or the first exec of a child of a minimal init (tini, dumb-init, catatonit) the runtime started")
_add("proc.comm", "str", _head("comm"), "kernel comm of the thread")
_add("thread.tid", "int", _head("tid"), "thread id")
_add("fd.name", "str", fd_name, "path, or 'saddr:sport->daddr:dport' for sockets")
_add("fd.nameraw", "str", fd_nameraw, "the path as the process wrote it (relative, with ../, //), before "
     "normalisation; fd.name otherwise")
_add("fd.directory", "str", fd_directory, "directory of fd.name (files)")
_add("fd.filename", "str", fd_filename, "base name of fd.name (files)")
_add("fd.type", "str", fd_type, "file, ipv4, ipv6, unix, netlink, packet, memfd; dup: the probe's fd_type")
_add("fd.typechar", "str", fd_typechar, "f, 4, 6, u, n, p, m")
_add("fd.sip", "str", _net_field("saddr", "daddr"), "server IP (remote on connect, local on accept)")
_add("fd.cip", "str", _net_field("daddr", "saddr"), "client IP (local on connect, remote on accept)")
_add("fd.sport", "int", _net_field("sport", "dport"), "server port")
_add("fd.cport", "int", _net_field("dport", "sport"), "client port")
_add("fd.lip", "str", _raw_net("saddr"), "local IP")
_add("fd.rip", "str", _raw_net("daddr"), "remote IP")
_add("fd.lport", "int", _raw_net("sport"), "local port")
_add("fd.rport", "int", _raw_net("dport"), "remote port")
_add("fd.dip", "str", _raw_net("daddr"), "destination IP (raw daddr)")
_add("fd.dport", "int", _raw_net("dport"), "destination port (raw dport)")
_add("fd.net", "net", fd_ips, "either IP in a CIDR: fd.net = 10.0.0.0/8", many=True)
_add("fd.snet", "net", lambda ev: [v] if (v := _net(ev, "saddr", "daddr")) else [], "server IP in a CIDR", many=True)
_add("fd.cnet", "net", lambda ev: [v] if (v := _net(ev, "daddr", "saddr")) else [], "client IP in a CIDR", many=True)
_add("fd.l4proto", "str", fd_l4proto, "tcp, udp, ...")
_add("user.uid", "int", _head("uid"), "user id")
_add("user.name", "str", user_name, "user name from the host's /etc/passwd")
_add("group.gid", "int", _head("gid"), "group id")
_add("group.name", "str", group_name, "group name from the host's /etc/group")
_add("container.id", "str", container_id, "first 12 chars of the container id, 'host' on the host")
_add("container.full_id", "str", container_full_id, "full container id, 'host' on the host")
_add("container.name", "str", container_name, "container name, 'host' on the host")
_add("container.image", "str", container_image, "image reference")
_add("container.image.repository", "str", container_image_repository, "image without tag/digest")
_add("container.image.tag", "str", container_image_tag, "image tag")
_add("container.image.digest", "str", container_image_digest, "image digest")
_add("container.runtime", "str", lambda ev: (_ctr(ev) or _E).get("runtime"), "podman, docker, containerd, cri-o")
_add("container.type", "str", lambda ev: (_ctr(ev) or _E).get("runtime") if _ctr(ev) else "host",
     "runtime: podman, docker, containerd, cri-o ('host' on the host)")
_add("container.image.id", "str", _ctr_key("image_id"), "the runtime's image id (sha256 of the image config)")
_add("container.privileged", "bool", _ctr_key("privileged"), "runs privileged (all capabilities, host devices)")
_add("container.host_network", "bool", _ctr_key("host_network"), "shares the node's network namespace")
_add("container.host_pid", "bool", _ctr_key("host_pid"), "shares the node's pid namespace")
_add("container.host_ipc", "bool", _ctr_key("host_ipc"), "shares the node's IPC namespace")
_add("container.mount.source", "str", _mount_part("source"), "host paths mounted in the container (exec events: "
     "the runtime's mounts); `container.mount.source pmatch (/etc, /proc)` tests any of them", many=True)
_add("container.mount.dest", "str", _mount_part("dest"), "where the mounts are in the container (exec events)",
     many=True)
_add("container.mounts", "str", container_mounts, "the mounts as 'source:dest:rw|ro, ...' (exec events)")
_add("thread.cap_permitted", "str", cap_permitted, "permitted capabilities after the exec (exec events), e.g. "
     "CAP_SYS_ADMIN; `in (list)` tests any of them", many=True)
_add("proc.cap_permitted", "str", cap_permitted, "same as thread.cap_permitted", many=True)
_add("thread.cap_bounding", "str", _caps("cap_bounding"), "the bounding set after the exec (exec events): "
     "what the process or a setuid program it runs may hold, e.g. a container's granted capabilities", many=True)
_add("container.metadata_missing", "str", _ctr_key("metadata_missing"),
     "why the runtime gave no metadata (no_runtime_api, not_found, unreachable, timeout, pending...)")
_add("container.info", "str", container_info, "id, name and image in one string (for outputs)")
_add("k8s.ns.name", "str", _k8s("namespace"), "Kubernetes namespace")
_add("k8s.pod.name", "str", _k8s("pod"), "Kubernetes pod name")
_add("k8s.pod.uid", "str", _k8s("pod_uid"), "Kubernetes pod UID")
_add("k8s.pod.id", "str", _k8s("pod_uid"), "Kubernetes pod UID (Falco's older name)")
_add("k8s.pod.labels", "str", k8s_pod_labels, "the pod's labels as 'k1:v1, k2:v2'")
_add("k8s.owner.kind", "str", _k8s_ref("owner", "kind"), "kind of the pod's controller (ReplicaSet, DaemonSet...)")
_add("k8s.owner.name", "str", _k8s_ref("owner", "name"), "name of the pod's controller")
_add("k8s.workload.kind", "str", _k8s_ref("workload", "kind"), "top owner kind (Deployment, CronJob, ...)")
_add("k8s.workload.name", "str", _k8s_ref("workload", "name"), "top owner name")
for _kind, _field in (("ReplicaSet", "k8s.rs.name"), ("Deployment", "k8s.deployment.name"),
                      ("DaemonSet", "k8s.daemonset.name"), ("StatefulSet", "k8s.statefulset.name"),
                      ("Job", "k8s.job.name"), ("CronJob", "k8s.cronjob.name")):
    _add(_field, "str", _k8s_owned_by(_kind), f"the pod's {_kind}, derived from its labels and name")
_add("container.label", "str", lambda ev: None, "container.label[KEY]")
_add("k8s.pod.label", "str", lambda ev: None, "k8s.pod.label[KEY]")
_add("evt.arg", "any", lambda ev: None, "evt.arg.NAME or evt.arg[NAME]: a kind-specific field")


# --- derived from the event alone, for the default ruleset (rules/40-* ... 90-*) ---

_MODE_BITS = ((0o4000, "S_ISUID"), (0o2000, "S_ISGID"), (0o1000, "S_ISVTX"),
              (0o400, "S_IRUSR"), (0o200, "S_IWUSR"), (0o100, "S_IXUSR"),
              (0o40, "S_IRGRP"), (0o20, "S_IWGRP"), (0o10, "S_IXGRP"),
              (0o4, "S_IROTH"), (0o2, "S_IWOTH"), (0o1, "S_IXOTH"))


def evt_mode_flags(ev: Event) -> str | None:
    """chmod's and mkdir's mode, or the mode an open creates with, as Falco names its bits."""
    k = ev.get("kind")
    if k != "chmod" and k != "mkdir" and not (k == "open" and is_open_create(ev)):
        return None
    m = ev.get("mode")
    if m.__class__ is not int:
        return None
    return "|".join(n for b, n in _MODE_BITS if m & b)


def fd_is_other_proc(ev: Event) -> bool | None:
    """/proc/<pid>/... of another process: None off /proc/<pid|self|thread-self>."""
    p = _path(ev)
    if p is None or not p.startswith("/proc/"):
        return None
    who = p[6:].split("/", 1)[0]
    if who in ("self", "thread-self"):
        return False
    if not who.isdigit():
        return None
    return int(who) not in (ev.get("pid"), ev.get("tid"))


def proc_argv0(ev: Event) -> str | None:
    args = _args(ev)
    return str(args[0]) if args else None


_add("evt.mode_flags", "str", evt_mode_flags,
     "mode bits of a chmod or of an open creating a file, as names: 'S_ISUID|S_IRUSR|...'")
_add("fd.is_other_proc", "bool", fd_is_other_proc,
     "path under /proc/<pid>/ of another process (false for self, thread-self and the event's pid)")
_add("proc.argv0", "str", proc_argv0, "argv[0] as the process was started (may differ from its file name)")

# --- dns (services/enricher/dns.py) and names learnt from it (services/enricher/names.py) ---

def _dns(key: str) -> Extractor:
    return lambda ev: ev.get(key) if ev.get("kind") == "dns" else None


def dns_domains(ev: Event) -> list[Any]:
    """The query name and every parent domain: a.b.pool.com, b.pool.com, pool.com, com."""
    q = _dns("qname")(ev)
    if not q:
        return []
    labels = q.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _labels(ev: Event) -> list[str]:
    q = _dns("qname")(ev)
    return q.rstrip(".").split(".") if q else []


def dns_max_label_len(ev: Event) -> int | None:
    labels = _labels(ev)
    return max(map(len, labels)) if labels else None


def label_entropy(label: str) -> int:
    """Shannon entropy of a label's characters, in hundredths of a bit per character."""
    if not label:
        return 0
    counts: dict[str, int] = {}
    for c in label.lower():
        counts[c] = counts.get(c, 0) + 1
    n = len(label)
    return round(-100 * sum(k / n * math.log2(k / n) for k in counts.values()))


def dns_label_entropy(ev: Event) -> int | None:
    labels = _labels(ev)
    return label_entropy(max(labels, key=len)) if labels else None


def _named(ev: Event, server: bool) -> str | None:
    """The DNS name of the remote address (server side: only when we connected)."""
    k = ev.get("kind")
    if k == "connect" or (k == "flow" and ev.get("direction") == "connect"):
        return ev.get("dname")
    if k == "accept" or k == "flow":
        return None if server else ev.get("dname")
    return None


_add("dns.query.name", "str", _dns("qname"), "dns: the question's name (lower case, no trailing dot)")
_add("dns.query.type", "str", _dns("qtype"), "dns: A, AAAA, TXT, MX, ... (TYPEn when unnamed)")
_add("dns.query.domain", "str", dns_domains, "dns: the query name or any parent domain "
     "(dns.query.domain in (pool.example) matches x.pool.example)", many=True)
_add("dns.query.max_label_len", "int", dns_max_label_len, "dns: length of the query name's longest label")
_add("dns.query.label_entropy", "int", dns_label_entropy,
     "dns: entropy of the longest label, hundredths of a bit per character (random base32 ~ 400+)")
_add("dns.rcode", "str", _dns("rcode"), "dns answer: NOERROR, NXDOMAIN, SERVFAIL, ...")
_add("dns.answers", "str", lambda ev: _dns("answers")(ev) or [], "dns answer: any address or name answered",
     many=True)
_add("dns.direction", "str", _dns("direction"), "dns: query (sent) or answer (received)")
_add("dns.server", "str", _dns("daddr"), "dns: the server (resolver) address")
_add("dns.server.configured", "bool", _dns("resolver_configured"),
     "dns query: the server is a nameserver of the container's /etc/resolv.conf (unknown: unset)")
_add("dns.latency", "int", _dns("latency_ns"), "dns answer: ns since its query")
_add("dns.malformed", "str", _dns("malformed"), "dns: why the message did not parse (unset when it did)")
_add("fd.sip.name", "str", lambda ev: _named(ev, True), "connect/flow: the DNS name the server IP was resolved from")
_add("fd.rip.name", "str", lambda ev: _named(ev, False), "connect/accept/flow: the DNS name of the remote IP")

# Kind-specific fields: the schema's, plus extras the probe adds (services/probe/decode.py).
EXTRA_ARGS = ("dirfd", "fd", "backlog", "clone_flags", "argv_truncated", "flags", "uid", "gid", "euid", "suid",
              "egid", "sgid")
ARG_NAMES = frozenset(f for fields in KINDS.values() for f in fields) | frozenset(EXTRA_ARGS)
_ARG_TYPES = {"path": "str", "oldpath": "str", "newpath": "str", "target": "str", "filename": "str",
              "daddr": "str", "saddr": "str", "source": "str", "fstype": "str", "name": "str"}
_INDEXED = {"proc.aname": _aname_at, "proc.apid": _apid_at}
_KEYED = {"container.label": lambda k: _label("container", k), "k8s.pod.label": lambda k: _label("k8s", k),
          "proc.env": _env_var}
# Falco's evt.arg names on setuid/setgid are the requested ids; our head's uid/gid are the caller's.
_SETID_ARGS = {"uid": "new_uid", "euid": "new_euid", "suid": "new_suid",
               "gid": "new_gid", "egid": "new_egid", "sgid": "new_sgid"}


def resolve(name: str, arg: str | None) -> Field:
    """The Field for `name` (and its `[arg]`), or KeyError(reason)."""
    if name.startswith("evt.arg.") and arg is None:
        name, arg = "evt.arg", name[len("evt.arg."):]
    if name == "evt.arg":
        if arg is None:
            raise KeyError("evt.arg needs a name: evt.arg.NAME")
        if arg not in ARG_NAMES:
            raise KeyError(f"unknown event argument {arg!r} (known: {', '.join(sorted(ARG_NAMES))})")
        key = arg
        if arg in _SETID_ARGS:
            new = _SETID_ARGS[arg]
            return Field(f"evt.arg.{arg}", "any",
                         lambda ev: ev.get(new) if ev.get("kind") in ("setuid", "setgid") else ev.get(key))
        return Field(f"evt.arg.{arg}", _ARG_TYPES.get(arg, "any"), lambda ev: ev.get(key))
    f = FIELDS.get(name)
    if f is None:
        raise KeyError(f"unknown field {name!r}")
    if arg is None:
        if name in _KEYED and name != "proc.env":
            raise KeyError(f"{name} needs a key: {name}[KEY]")
        return f
    if name in _INDEXED:
        if not arg.isdigit():
            raise KeyError(f"{name}[{arg}]: index must be a number")
        return Field(f"{name}[{arg}]", f.type, _INDEXED[name](int(arg)), False, f.doc)
    if name in _KEYED:
        return Field(f"{name}[{arg}]", f.type, _KEYED[name](arg), False, f.doc)
    raise KeyError(f"field {name!r} takes no [argument]")
