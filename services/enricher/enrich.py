"""Turn a batch of raw events into enriched ones (proc, container, k8s).

Per batch: keep the process table by fork/exec/exit, resolve every event's
cgroup to a container, start the runtime lookups the batch needs and wait
for them at most `lookup_timeout` (the rest of the batch goes out with
id-only containers; the answers land in the cache for the next events).
Only one batch is in here at a time, so waiting events are bounded by one
batch plus the subscription's bounded pending queue.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from shared import log, subjects
from shared.bounded import Bounded
from shared.filterplan import DANGEROUS_ENV
from shared.schema import KINDS, missing_fields
from shared.stats import Stats

from .cgroups import CgroupMatch, parse_path
from .containers import ContainerRegistry
from .dns import DnsTracker
from .names import NameMap
from .proctable import ProcTable, read_environ

_log = log.get("enricher")
CLONE_THREAD = 0x10000
MAX_PENDING_ENV = 4096   # execenv events waiting for their exec (one per exec in flight)
MAX_FDS = 16384          # (pid, fd) -> path of opens seen, to name ftruncate/fchown fds
FD_KINDS = ("truncate", "chown")
NAMED_KINDS = frozenset(("connect", "accept", "flow"))  # get `dname` from the container's DNS answers
_UNSEEN: Any = object()
TRACKED_KINDS = frozenset(("execenv", "fork", "exec", "chdir", "dns"))  # kinds that change what is known


def _kind_label(kind: str) -> str:
    return kind if kind in KINDS else "other"


class Enricher:
    def __init__(self, procs: ProcTable, containers: ContainerRegistry, stats: Stats,
                 lookup_timeout: float, names: NameMap | None = None) -> None:
        self.procs, self.containers, self.stats = procs, containers, stats
        self.lookup_timeout = lookup_timeout
        self._pending_env: Bounded[int, tuple[dict, bool]] = Bounded(  # pid -> (env, truncated)
            MAX_PENDING_ENV, lambda _pid, _env: self.stats.inc("enricher_env_dropped_total"))
        self._fds: Bounded[tuple[int, int], str] = Bounded(MAX_FDS)
        self.names = names if names is not None else NameMap()
        self.dns = DnsTracker(stats, self.names)

    def _note_env(self, ev: dict) -> None:
        """execenv precedes its exec (sent at execve entry): kept until the exec says how it went."""
        env = ev.get("env")
        if not isinstance(env, dict):
            return
        self._pending_env[ev["pid"]] = ({str(k): str(v) for k, v in env.items()}, ev.get("env_truncated") is True)

    def _exec_env(self, pid: int) -> dict | None:
        got = self._pending_env.pop(pid, None)
        if got is None:
            return None
        env, truncated = got
        if truncated:  # envp longer than the kernel scans: the new image's environ, if still there
            more = read_environ(pid, set(env) | set(DANGEROUS_ENV))
            if more is not None:
                env = {**more, **env}
            self.stats.inc("enricher_env_truncated_total", reason="read" if more is not None else "gone")
        return env

    def _fd_path(self, ev: dict) -> None:
        """Remember what opens returned; name the fd of ftruncate/fchown the kernel could not name."""
        if ev["kind"] == "open":
            ret, path = ev.get("ret"), ev.get("path")
            if isinstance(ret, int) and ret >= 0 and path.__class__ is str and path and not ev.get("ret_unknown"):
                if path[0] != "/":
                    cwd = (ev.get("proc") or {}).get("cwd")
                    path = os.path.normpath(os.path.join(cwd, path)) if cwd and ev.get("dirfd") == -100 else path
                self._fds[(ev["pid"], ret)] = path
        elif ev.get("path") is None and isinstance(ev.get("fd"), int) and "path_from_fd" not in ev:
            # (path_from_fd False: the kernel found the fd's file has no path, e.g. a memfd's)
            path = self._fds.get((ev["pid"], ev["fd"]))
            if path is not None:
                ev["path"] = path
                ev["path_from_fd"] = True

    def _scope(self, ev: dict, m: CgroupMatch | None) -> str:
        """Whose name map an event uses: its container's, or the host's."""
        return m.container_id if m is not None else "host"

    def _malformed(self, reason: str, ev: dict) -> None:
        self.stats.inc("enricher_malformed_total", reason=reason)
        _log.warning("dropped raw event %s (kind %r): %s", ev.get("id"), ev.get("kind"), reason)

    def _check(self, ev: object) -> str | None:
        """Why a raw event cannot be enriched (the bus does not validate it: this is the one check).
        enrich() tests an event as the probe makes them inline, and asks here only about the rest."""
        why = missing_fields(ev)
        if why:
            return why
        if not subjects.valid_token(ev["kind"]):
            return "kind is not a subject token"
        pid = ev["pid"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            return "pid is not a non-negative integer"
        cg = ev.get("cgroup_id")
        if cg is not None and (not isinstance(cg, int) or isinstance(cg, bool) or cg < 0):
            return "cgroup_id is not a non-negative integer"
        return None

    def _track(self, ev: dict, host: bool = False) -> None:
        """Fork/exec/chdir change the table; exit after the event is described."""
        kind, pid = ev["kind"], ev["pid"]
        if kind == "fork":
            child, flags = ev.get("child_pid"), ev.get("clone_flags")
            flags = flags if isinstance(flags, int) else 0
            if flags & CLONE_THREAD:
                return  # a thread, not a process
            if isinstance(child, int) and child > 0:
                self.procs.on_fork(pid, child, ev.get("comm") or "", flags)
        elif kind == "chdir" and ev.get("ret") in (None, 0):
            path, fd = ev.get("path"), ev.get("fd")
            self.procs.on_chdir(pid, path if isinstance(path, str) else None, fd if isinstance(fd, int) else None)
        elif kind == "execenv":
            self._note_env(ev)
        elif kind == "exec" and (ev.get("ret") in (None, 0)):
            argv = ev.get("argv")
            tty = ev.get("tty")
            self.procs.on_exec(pid, ev.get("filename") if isinstance(ev.get("filename"), str) else None,
                               argv if isinstance(argv, list) else None, ev.get("comm") or "",
                               ev.get("ppid") if isinstance(ev.get("ppid"), int) else 0,
                               host=host, tty=tty if tty.__class__ is int else None, env=self._exec_env(pid))
        elif kind == "exec":  # failed: its environment goes with it
            self._pending_env.pop(pid, None)

    def prime(self, events: list[dict]) -> None:
        """On arrival: resolve new cgroups while they still
        exist and start the container lookups the events will need."""
        for ev in events:
            if ev.__class__ is not dict:
                continue
            if ev.get("kind") == "cgroup":
                self._cgroup_made(ev)
            cg = ev.get("cgroup_id")
            if not isinstance(cg, int) or cg <= 1 or self.containers.known(cg):
                continue
            pid = ev.get("pid") if isinstance(ev.get("pid"), int) else 0
            ts = ev.get("ts") if isinstance(ev.get("ts"), int) else 0
            m = self.containers.resolve(cg, ts, pid)
            if m is not None and self.containers.needs_lookup(m):
                self.containers.lookup(m)

    def _cgroup_made(self, ev: dict) -> None:
        """The probe saw a cgroup made (kind "cgroup", before anything runs in it): a container's
        is learnt at once, in kernel order, so even one gone before it could be stat'ed is placed."""
        cgid, path = ev.get("new_cgroup_id"), ev.get("path")
        if ev.get("hierarchy") != 0 or not isinstance(cgid, int) or cgid <= 1 or not isinstance(path, str):
            return
        m = parse_path(path)
        if m is not None:
            self.stats.inc("enricher_container_cgroups_made_total")
            self.containers.learn(cgid, m)

    async def enrich(self, events: list[dict]) -> list[dict]:
        out: list[dict] = []
        in_containers: list[tuple[dict, CgroupMatch]] = []  # (event, match): their views after the lookups
        kinds_in: dict[str, int] = {}
        bad: dict[str, int] = {}    # of kinds_in, the malformed ones
        views: dict[int, tuple[str, tuple[dict, int]]] = {}  # pid -> (comm, proc view) within the batch
        in_views: set[int] = set()  # pids that are some cached view's ancestor
        resolve, known = self.containers.resolve, self.containers.known
        # cgroup -> match, resolved once a batch: a container is noted seen once a batch, with the
        # batch's first cgroup of it (not each event's), which is what last_seen and cgroup_id then say
        by_cgroup: dict[int, CgroupMatch | None] = {}
        for ev in events:
            # the fast path: an event as the probe makes them (anything else goes through _check)
            if ev.__class__ is dict:
                kind, pid, cg = ev.get("kind"), ev.get("pid"), ev.get("cgroup_id")
                ok = kind.__class__ is str and kind in KINDS and pid.__class__ is int and pid >= 0 \
                    and ev.get("ts").__class__ is int and ev.get("id").__class__ is str and "node" in ev \
                    and (cg is None or cg.__class__ is int and cg >= 0)
            else:
                kind, ok = None, False
            label = kind if ok else _kind_label(kind) if kind.__class__ is str else "other"
            kinds_in[label] = kinds_in.get(label, 0) + 1
            if not ok:
                why = self._check(ev)
                if why:
                    bad[label] = bad.get(label, 0) + 1
                    self._malformed(why, ev if isinstance(ev, dict) else {})
                    continue
                pid, cg = ev["pid"], ev.get("cgroup_id")
            if cg:
                m = by_cgroup.get(cg, _UNSEEN)
                if m is _UNSEEN:
                    m = resolve(cg, ev["ts"], pid)
                    if known(cg):  # settled: not an answer that may change within the batch
                        by_cgroup[cg] = m
            else:
                m = self._by_proc(pid)
            if kind in TRACKED_KINDS:
                if kind == "execenv":
                    self._track(ev)
                elif kind == "dns":  # before the process view: an answer takes its query's pid
                    self.dns.on_event(ev, self._scope(ev, m if cg else None))
                    pid = ev["pid"]
                else:  # fork, exec, chdir
                    # host: the probe's cgroup id names no container (a missing id trusts nothing)
                    self._track(ev, host=bool(cg) and m is None)
                    changed = ev.get("child_pid") if kind == "fork" else pid
                    views.pop(changed, None)
                    if kind == "exec" and changed in in_views:  # an ancestor of cached views changed
                        views.clear()
                        in_views.clear()
            comm = ev.get("comm")
            if comm.__class__ is not str:
                comm = ""
            cached = views.get(pid)
            if cached is not None and cached[0] == comm:
                view = cached[1]
            else:  # a new comm may be a rename the table must learn
                ppid, tid = ev.get("ppid"), ev.get("tid")
                view = self.procs.proc_view(pid, comm, ppid if isinstance(ppid, int) else 0,
                                            tid if isinstance(tid, int) else None)
                views[pid] = (comm, view)
                in_views.update(a["pid"] for a in view[0]["ancestors"])
            ev["proc"], table_ppid = view
            if table_ppid:  # the table's parent: it follows CLONE_PARENT and reparenting
                ev["ppid"] = table_ppid
            if kind == "open" or kind in FD_KINDS:
                self._fd_path(ev)
            elif kind == "exit":
                self._pending_env.pop(pid, None)
                self.procs.on_exit(pid)
                views.pop(pid, None)  # the pid's next events are a new process
            elif kind in NAMED_KINDS:
                ev["dname"] = self.names.lookup(self._scope(ev, m), ev.get("daddr"), ev["ts"])
            if m is None:
                ev["container"] = ev["k8s"] = None
            else:
                in_containers.append((ev, m))
            out.append(ev)
        for kind, n in kinds_in.items():
            self.stats.inc("enricher_events_in_total", n, kind=kind)
        if in_containers:
            await self._lookups([m for _, m in in_containers])
            self._container_views(in_containers)
        for kind, n in kinds_in.items():
            if n - bad.get(kind, 0):
                self.stats.inc("enricher_events_out_total", n - bad.get(kind, 0), kind=kind)
        for reason, n in self.procs.fixups.items():
            self.stats.inc("enricher_proc_fixups_total", n, reason=reason)
        self.procs.fixups.clear()
        self.procs.tick()
        return out

    def _container_views(self, in_containers: list[tuple[dict, CgroupMatch]]) -> None:
        by_match: dict[int, tuple[dict, dict | None]] = {}  # one container view per match in the batch
        id_only = 0
        for ev, m in in_containers:
            cv = by_match.get(id(m))
            if cv is None:
                cv = by_match[id(m)] = self.containers.view_cached(m)
            ev["container"], ev["k8s"] = cv
            id_only += cv[0]["name"] is None
            if ev["kind"] == "exec" and (mounts := self.containers.mounts(m)):
                ev["container"] = {**cv[0], "mounts": mounts}
        if id_only:
            self.stats.inc("enricher_container_id_only_total", id_only)

    def _by_proc(self, pid: int) -> CgroupMatch | None:
        """No cgroup id from the probe: the process's cgroup path from the table or /proc."""
        p = self.procs.get(pid)
        return parse_path(p.cgroup) if p is not None and p.cgroup else None

    async def _lookups(self, matches) -> None:
        by_id = {m.container_id: m for m in matches}   # a batch holds few containers: ask once each
        needed = [m for m in by_id.values() if self.containers.needs_lookup(m)]
        if not needed:
            return
        tasks = [t for m in needed if (t := self.containers.lookup(m)) is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.lookup_timeout)
        if pending:  # they go on in the background; this batch goes out id-only
            self.stats.inc("enricher_lookup_failures_total", len(pending), source="batch", reason="wait_timeout")
