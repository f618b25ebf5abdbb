"""What the alerter remembers between events, for rules that need a sequence.

Two facts are derived and put on an exec event's `proc` before the rules
see it (engine fields `proc.is_exe_upper_layer`, `proc.is_exe_from_memfd`,
named after Falco's):

- is_exe_upper_layer: the executed path was created in the same container
  earlier (open with O_CREAT, or the new name of a rename/link): a binary
  dropped into the container and run, i.e. not part of its image.
- is_exe_from_memfd: fileless exec: the exe is "/memfd:..." or the process
  called memfd_create and then exec'd an fd path (/dev/fd/N,
  /proc/self/fd/N, or the empty path of execveat(AT_EMPTY_PATH)).

Events of different kinds travel on different subjects, so an exec may
arrive before the open/memfd_create that preceded it. Recent execs are
kept too: when the earlier create/memfd_create shows up late, `late(ev)`
hands back the exec, annotated, for a second evaluation (the service
raises only rules that did not match the first time).

The tables are bounded LRUs (`size` entries). Being per replica, they
need every event of a container at one replica: with several replicas use
partitioned subjects (shared/partition.py), else a sequence split across
replicas is missed.
"""
from __future__ import annotations

import posixpath
from collections import OrderedDict

O_CREAT = 0o100
_FD_EXEC_PREFIXES = ("/dev/fd/", "/proc/self/fd/")


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()

    def add(self, key) -> None:
        self._d[key] = True
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self._d

    def discard(self, key) -> None:
        self._d.pop(key, None)

    def __len__(self) -> int:
        return len(self._d)


def _cid(ev: dict) -> str | None:
    c = ev.get("container")
    return c.get("id") if isinstance(c, dict) else None


def _procd(ev: dict) -> dict:
    p = ev.get("proc")
    return p if isinstance(p, dict) else {}


def _abs(path: object, ev: dict) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    if not path.startswith("/"):
        cwd = _procd(ev).get("cwd")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            return None
        path = posixpath.join(cwd, path)
    return posixpath.normpath(path)


class _Recent:
    """Bounded key -> value table, oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()

    def put(self, key, value) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def pop(self, key):
        return self._d.pop(key, None)


class ExecState:
    def __init__(self, size: int = 4096) -> None:
        self.created = _Lru(size)   # (container id, absolute path)
        self.memfd = _Lru(size)     # (container id or "host", pid)
        self.execs_by_path = _Recent(size)  # (container id, path) -> (exec event, rules it matched)
        self.execs_by_pid = _Recent(size)   # (container id or "host", pid) -> same

    def remember_exec(self, ev: dict, rules: set[str]) -> None:
        """An exec and the rules it matched, in case its cause arrives late."""
        cid = _cid(ev)
        if cid:
            for p in {_abs(ev.get("filename"), ev), _abs(_procd(ev).get("exe"), ev)}:
                if p:
                    self.execs_by_path.put((cid, p), (ev, rules))
        self.execs_by_pid.put((cid or "host", ev.get("pid")), (ev, rules))

    def late(self, ev: dict) -> list[tuple[dict, set[str]]]:
        """Execs seen before `ev` that `ev` (an earlier create or memfd_create)
        explains: each annotated, with the rules it already matched."""
        kind, out = ev.get("kind"), []
        if kind == "open" or kind in ("rename", "link"):
            cid = _cid(ev)
            p = _abs(ev.get("path") if kind == "open" else ev.get("newpath"), ev)
            hit = self.execs_by_path.pop((cid, p)) if cid and p else None
        elif kind == "memfd":
            hit = self.execs_by_pid.pop((_cid(ev) or "host", ev.get("pid")))
        else:
            return out
        if hit and _before(ev, hit[0]):
            again = self._exec(hit[0])
            if again is not hit[0]:
                out.append((again, hit[1]))
        return out

    def annotate(self, ev: dict) -> dict:
        """Remember what `ev` tells, and return `ev` (or an annotated copy for execs)."""
        kind = ev.get("kind")
        if kind == "exec":
            return self._exec(ev)
        ok = not isinstance(ev.get("ret"), int) or ev["ret"] >= 0
        if kind == "open":
            cid = _cid(ev)
            flags = ev.get("flags")
            if cid and ok and isinstance(flags, int) and flags & O_CREAT:
                p = _abs(ev.get("path"), ev)
                if p:
                    self.created.add((cid, p))
        elif kind in ("rename", "link"):
            cid = _cid(ev)
            p = _abs(ev.get("newpath"), ev)
            if cid and ok and p:
                self.created.add((cid, p))
        elif kind == "memfd" and ok:
            self.memfd.add((_cid(ev) or "host", ev.get("pid")))
        return ev

    def _exec(self, ev: dict) -> dict:
        proc = ev.get("proc") or {}
        filename = ev.get("filename")
        exe = proc.get("exe") if isinstance(proc, dict) else None
        cid = _cid(ev)
        facts = {}
        if cid:
            for p in {_abs(filename, ev), _abs(exe, ev)}:
                if p and (cid, p) in self.created:
                    facts["is_exe_upper_layer"] = True
        names = [n for n in (filename, exe) if isinstance(n, str)]
        comms = [n for n in (ev.get("comm"), proc.get("name") if isinstance(proc, dict) else None)
                 if isinstance(n, str)]
        # execveat(AT_EMPTY_PATH) of a memfd: the kernel names the task after the memfd
        if any(n.startswith(("/memfd:", "memfd:")) for n in names) or any(c.startswith("memfd:") for c in comms):
            facts["is_exe_from_memfd"] = True
        elif (cid or "host", ev.get("pid")) in self.memfd and (
                not filename or any(n.startswith(_FD_EXEC_PREFIXES) for n in names)):
            facts["is_exe_from_memfd"] = True
        if not facts:
            return ev
        return {**ev, "proc": {**(proc if isinstance(proc, dict) else {}), **facts}}


def _before(a: dict, b: dict) -> bool:
    ta, tb = a.get("ts"), b.get("ts")
    return not (isinstance(ta, int) and isinstance(tb, int)) or ta <= tb
