"""The process table: who every pid is, kept by fork/exec/exit/chdir events.

Events arrive in the kernel's order, so the table holds each process as it
was when its event happened. Seeded from /proc at start; a pid first seen in
an event and unknown here is read from /proc/<pid> once (a miss is
remembered too), and what /proc shows is kept only if its comm is the
event's (otherwise the process has changed since). An event of a pid whose
entry has exited is a new process with a reused pid: the old entry is
dropped. Bounded: least recently used entries go first, exited processes
stay for a grace period (their children name them), and every eviction and
correction is counted.
"""
from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from shared.bounded import Bounded
from shared.schema import event_text

from .cgroups import parse_path

# The container runtimes' own executables, as paths in the host's mount
# namespace. A process that exec'd one of these while in a host cgroup (no
# container) runs the runtime's code: proc.is_container_runtime (below).
RUNTIME_EXECUTABLES = frozenset(
    f"{d}/{n}" for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin",
                         "/usr/libexec/podman", "/usr/local/libexec/podman", "/usr/libexec/crio",
                         "/usr/lib/podman", "/usr/libexec/docker")
    for n in ("runc", "crun", "runsc", "youki", "conmon", "containerd-shim", "containerd-shim-runc-v1",
              "containerd-shim-runc-v2", "containerd-shim-runsc-v1", "docker-runc"))
# Minimal inits an image (or `run --init`) starts as pid 1 to start the real
# command: their first child's first exec counts as started by the runtime too.
INIT_NAMES = frozenset(("tini", "tini-static", "dumb-init", "catatonit", "docker-init", "podman-init"))
MAX_ANCESTORS = 8
MAX_ARGS = 64
MAX_ARG_LEN = 4096
CLONE_PARENT = 0x8000
SELF_EXEC = re.compile(r"^/proc/(?:self|\d+)/exe$")
FD_EXEC = re.compile(r"^/proc/(?:self|\d+)/fd/\d+$|^/dev/fd/\d+$")


@dataclass
class Proc:
    pid: int
    ppid: int = 0
    comm: str = ""
    exe: str = ""
    args: list[str] = field(default_factory=list)
    cwd: str | None = None
    cgroup: str | None = None   # cgroup-v2 path when read from /proc
    exited_at: float | None = None  # monotonic
    argv0_name: bool = False    # re-exec of itself (/proc/self/exe, fexecve): the name is argv[0]'s
    # Decided from the lineage the table saw, never from names the process chose:
    runtime: bool = False       # runs the container runtime's own code (see RUNTIME_EXECUTABLES)
    by_runtime: bool = False    # this image was exec'd by the runtime: the entrypoint, or an exec'd command
    init_child: bool = False    # forked by a minimal init started by the runtime, not exec'd since
    tty: int | None = None      # controlling tty (tty_nr; 0 none), None unknown
    env: dict | None = None     # watched exec environment variables (probe execenv), None unknown

    @property
    def name(self) -> str:
        if self.argv0_name and self.args:
            return os.path.basename(self.args[0])
        return os.path.basename(self.exe) if self.exe else self.comm

    @property
    def cmdline(self) -> str:
        return " ".join(self.args)


def _readlink(path: str) -> str | None:
    """The link's target as event text (a name in bytes that are not UTF-8 has them as U+FFFD)."""
    try:
        return event_text(os.readlink(path))
    except OSError:
        return None


def _exe(pid: int) -> str | None:
    exe = _readlink(f"/proc/{pid}/exe")
    return exe[:-10] if exe and exe.endswith(" (deleted)") else exe


def read_proc(pid: int) -> Proc | None:
    """A live process as /proc shows it, or None when it is gone."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    lp, rp = stat.find("("), stat.rfind(")")
    comm = stat[lp + 1:rp]
    rest = stat[rp + 2:].split()
    ppid = int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else 0
    tty = int(rest[4]) if len(rest) > 4 and rest[4].lstrip("-").isdigit() else None
    try:
        with open(f"{base}/cmdline", "rb") as f:
            raw = f.read(MAX_ARG_LEN * 4)
        args = [a.decode(errors="replace") for a in raw.split(b"\0")[:MAX_ARGS] if a] if raw else []
    except OSError:
        args = []
    exe = _exe(pid) or ""
    tty = int(rest[4]) if len(rest) > 4 and rest[4].lstrip("-").isdigit() else None
    cgroup = None
    try:
        with open(f"{base}/cgroup", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("0::"):
                    cgroup = line[3:]
    except OSError:
        pass
    # Seen before the table knew it: the runtime's code when it runs a runtime executable from a host cgroup.
    runtime = exe in RUNTIME_EXECUTABLES and cgroup is not None and parse_path(cgroup) is None
    return Proc(pid=pid, ppid=ppid, comm=comm, exe=exe, args=args, cwd=_readlink(f"{base}/cwd"), cgroup=cgroup,
                runtime=runtime, tty=tty)


def read_tty(pid: int) -> int | None:
    """tty_nr of a live process (0: none), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2:].split()
    return int(rest[4]) if len(rest) > 4 and rest[4].lstrip(b"-").isdigit() else None


MAX_ENVIRON = 256 * 1024


def read_environ(pid: int, names: set[str]) -> dict[str, str] | None:
    """The variables `names` from /proc/<pid>/environ (bounded), or None when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read(MAX_ENVIRON)
    except OSError:
        return None
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, eq, value = item.decode(errors="replace").partition("=")
        if eq and name in names:
            out.setdefault(name, value)
    return out


class ProcTable:
    def __init__(self, max_entries: int = 65536, exit_grace_s: float = 30.0,
                 runtime_executables: frozenset[str] = RUNTIME_EXECUTABLES) -> None:
        self.max_entries = max_entries
        self.runtime_executables = runtime_executables
        self.exit_grace_s = exit_grace_s
        self._procs: OrderedDict[int, Proc] = OrderedDict()
        self._exited: OrderedDict[int, float] = OrderedDict()  # pid -> exit time, oldest first
        # pids /proc did not know, and exited ones past their grace (/proc would show a reused pid)
        self._missing: Bounded[int, None] = Bounded(max_entries)
        self.evictions = 0          # entries dropped (LRU over capacity or exit grace over)
        self.proc_reads = 0         # /proc fallbacks tried
        self.proc_misses = 0        # ... that found no such process
        # corrections since the enricher last counted them, by reason: stale_pid (an exited
        # entry's pid came back), proc_changed (/proc showed another comm than the event),
        # missed_exec (a new comm and new args in /proc), reparented (the parent is gone:
        # /proc names the subreaper or init that took the child)
        self.fixups: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    # --- filling -------------------------------------------------------
    def seed(self) -> int:
        """Read every process in /proc; returns how many."""
        n = 0
        for name in os.listdir("/proc"):
            if name.isdigit():
                p = read_proc(int(name))
                if p:
                    self._put(p)
                    n += 1
        return n

    def _put(self, p: Proc) -> Proc:
        self._procs[p.pid] = p
        self._procs.move_to_end(p.pid)
        self._missing.pop(p.pid, None)
        self._evict()
        return p

    def _fixup(self, reason: str) -> None:
        self.fixups[reason] = self.fixups.get(reason, 0) + 1

    def _miss(self, pid: int) -> None:
        self._missing[pid] = None

    def _evict(self) -> None:
        now = time.monotonic()
        while self._exited:
            pid, at = next(iter(self._exited.items()))
            if now - at < self.exit_grace_s:
                break
            self._exited.popitem(last=False)
            if self._procs.pop(pid, None) is not None:
                self.evictions += 1
                self._miss(pid)  # gone: its children must not be named after the pid's next owner
        while len(self._procs) > self.max_entries:
            pid, _ = self._procs.popitem(last=False)
            self._exited.pop(pid, None)
            self.evictions += 1

    def get(self, pid: int, lookup: bool = True) -> Proc | None:
        """The entry for `pid` (exited ones too: they name their children); unknown
        pids are read from /proc once."""
        p = self._procs.get(pid)
        if p is not None:
            self._procs.move_to_end(pid)
            return p
        if not lookup or pid <= 0 or pid in self._missing:
            return None
        self.proc_reads += 1
        p = read_proc(pid)
        if p is None:
            self.proc_misses += 1
            self._miss(pid)
            return None
        return self._put(p)

    def live(self, pid: int, comm: str = "", ppid: int = 0) -> Proc | None:
        """The entry of the process that `pid` is now, at an event of it with kernel `comm`.

        In kernel order nothing follows a process's exit, so an exited entry
        is an earlier owner of a reused pid. What /proc shows later is kept
        only if its comm is still the event's."""
        p = self._procs.get(pid)
        if p is not None and p.exited_at is not None:
            self._fixup("stale_pid")
            self._exited.pop(pid, None)
            del self._procs[pid]
            self._missing.pop(pid, None)
            p = None
        if p is None:
            p = self.get(pid)
            if p is not None and comm and p.comm != comm:  # exec'd or renamed since the event
                self._fixup("proc_changed")
                p = self._put(Proc(pid=pid, ppid=ppid or p.ppid, comm=comm, cgroup=p.cgroup))
        return p

    # --- kept by events --------------------------------------------------
    def on_fork(self, parent_pid: int, child_pid: int, comm: str = "", flags: int = 0) -> None:
        parent = self.live(parent_pid)
        # CLONE_PARENT (runc's nsexec): the child is the caller's sibling
        ppid = (parent.ppid if parent else 0) if flags & CLONE_PARENT else parent_pid
        if parent is not None:
            child = Proc(pid=child_pid, ppid=ppid, comm=comm or parent.comm, exe=parent.exe,
                         args=list(parent.args), cwd=parent.cwd, cgroup=parent.cgroup,
                         argv0_name=parent.argv0_name, runtime=parent.runtime, tty=parent.tty, env=parent.env,
                         init_child=parent.by_runtime and os.path.basename(parent.exe) in INIT_NAMES)
        else:
            child = Proc(pid=child_pid, ppid=ppid, comm=comm)
        self._exited.pop(child_pid, None)  # pid reuse
        self._put(child)

    def on_exec(self, pid: int, filename: str | None, argv: list | None, comm: str = "",
                ppid: int = 0, host: bool = False, tty: int | None = None, env: dict | None = None) -> Proc:
        """`host`: the exec happened in a host cgroup (no container), as the probe's cgroup id
        shows; `tty` the controlling terminal at exec (None unknown); `env` the watched variables
        the probe found in this exec's envp (None: none found or not watched)."""
        p = self.live(pid) or Proc(pid=pid)
        p.env = env
        if tty is not None:
            p.tty = tty
        p.argv0_name = False
        was_runtime, self_exec = p.runtime, False
        if filename and SELF_EXEC.match(filename):
            self_exec = True
            # busybox and runc re-exec themselves: the file is the one already running
            p.exe = p.exe or _exe(pid) or filename
            p.argv0_name = True
        elif not filename or FD_EXEC.match(filename):
            # fexecve, execveat(fd, "", AT_EMPTY_PATH) (e.g. of a memfd): what the fd was, if the
            # process still shows it; named after argv[0], never after the image it replaced
            self_exec = True
            p.exe = _exe(pid) or filename or ""
            p.argv0_name = True
        else:
            p.exe = filename
        if p.cwd is None:  # only when unknown: /proc may already show a later chdir
            p.cwd = _readlink(f"/proc/{pid}/cwd")
        path = "" if not host or not filename else os.path.normpath(os.path.join(p.cwd or "/", filename))
        # The runtime's code: a runtime executable exec'd from a host cgroup, and the runtime
        # re-executing itself (`/proc/self/exe init`, its memfd clone by fd: runc init does so
        # after it moved into the container's cgroup). Any other exec ends it: what the runtime
        # exec'd in a container is the container's program.
        p.runtime = (host and path in self.runtime_executables) or (was_runtime and self_exec)
        p.by_runtime = (was_runtime or p.init_child) and not p.runtime and not host
        p.init_child = False
        # the tty matters in containers (Terminal shell in container); host execs skip the /proc read
        p.tty = tty if tty is not None else (None if host else read_tty(pid))
        if isinstance(argv, list):
            p.args = [str(a)[:MAX_ARG_LEN] for a in argv[:MAX_ARGS]]
        if comm:
            p.comm = comm
        if ppid:
            p.ppid = ppid
        if p.cwd is None:  # only when unknown: /proc may already show a later chdir
            p.cwd = _readlink(f"/proc/{pid}/cwd")
        p.exited_at = None
        self._exited.pop(pid, None)
        return self._put(p)

    def on_chdir(self, pid: int, path: str | None, fd: int | None = None) -> None:
        """A successful chdir(path) or fchdir(fd): relative paths are taken from the
        known cwd; an fd is resolved while the process still has it, else cwd is unknown
        (and read from /proc at the next exec)."""
        p = self.live(pid)
        if p is None:
            return
        if path:
            cwd = os.path.join(p.cwd, path) if p.cwd and not path.startswith("/") else path
            p.cwd = os.path.normpath(cwd) if cwd.startswith("/") else None
        else:
            target = _readlink(f"/proc/{pid}/fd/{fd}") if fd is not None and fd >= 0 else None
            p.cwd = target if target and target.startswith("/") else None

    def on_exit(self, pid: int) -> None:
        p = self._procs.get(pid)
        if p is None or p.exited_at is not None:
            return
        p.exited_at = time.monotonic()
        self._exited[pid] = p.exited_at
        self._evict()

    def tick(self) -> None:
        """Drop exited processes past their grace period."""
        self._evict()

    def _renamed(self, p: Proc, comm: str) -> None:
        """The kernel's comm is not the table's: a rename (prctl, busybox, runc's
        stages) when it starts with the program's name, else perhaps a missed exec:
        then /proc says what runs now, if its comm is still this one."""
        names = [os.path.basename(x)[:15] for x in (p.exe, p.args[0] if p.args else "") if x]
        if not any(n and comm.startswith(n) for n in names):
            self.proc_reads += 1
            now = read_proc(p.pid)
            if now is not None and now.comm == comm and now.args != p.args:
                self._fixup("missed_exec")
                p.exe, p.args, p.argv0_name = now.exe, now.args, False
        p.comm = comm

    def _reparent(self, p: Proc) -> None:
        """`p`'s parent is gone (exited past its grace): the kernel gave `p` to a
        subreaper or init, which /proc shows while `p` is the same process."""
        self.proc_reads += 1
        now = read_proc(p.pid)
        p.ppid = now.ppid if now is not None and now.comm == p.comm else 0
        if p.ppid:
            self._fixup("reparented")

    # --- reading -----------------------------------------------------------
    def proc_view(self, pid: int, comm: str = "", ppid: int = 0, tid: int | None = None) -> tuple[dict, int]:
        """(`proc` as in shared/schema.py, ppid) for an event of `pid` (thread `tid`)
        whose kernel comm was `comm`."""
        main = tid in (None, pid)  # the main thread's comm is the process's
        p = self.live(pid, comm if main else "", ppid)
        if p is None:
            p = Proc(pid=pid, ppid=ppid, comm=comm)
        elif main and comm and p.comm != comm:
            self._renamed(p, comm)
        if ppid and not p.ppid and ppid not in self._missing:
            p.ppid = ppid
        if p.ppid > 0 and p.ppid in self._missing and p.exited_at is None and pid in self._procs:
            self._reparent(p)
        parent = self.get(p.ppid) if p.ppid > 0 else None
        ancestors = []
        seen = {pid}
        cur = parent
        while cur is not None and len(ancestors) < MAX_ANCESTORS and cur.pid not in seen:
            seen.add(cur.pid)
            a = {"pid": cur.pid, "comm": cur.comm, "exe": cur.exe}
            if not ancestors:  # args for the parent only: they make most of an event's size
                a["args"] = cur.args
            ancestors.append(a)
            cur = self.get(cur.ppid) if cur.ppid > 0 else None
        return {
            "exe": p.exe or None,
            "args": p.args,
            "cmdline": p.cmdline,
            "name": p.name or comm,
            "cwd": p.cwd,
            "tty": p.tty,
            "env": p.env,
            "ppid": p.ppid,
            "pname": parent.name if parent else None,
            "pexe": (parent.exe or None) if parent else None,
            "pcmdline": parent.cmdline if parent else None,
            "ancestors": ancestors,
            "is_container_runtime": p.runtime,
            "is_container_entrypoint": p.by_runtime,
        }, p.ppid
