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
raises only rules that did not match the first time). "Recent" is
`late_window_s`: an older exec is not matched and `expire()` forgets it, so
what is held follows the exec rate, not the table sizes times the
containers (whole events: the sizes alone would allow gigabytes).

The tables are per container ("host" for host processes): each container
has its own bounded LRUs (`size` entries each), and at most `containers`
containers are remembered (the least recently active is forgotten first).
A container that creates files or execs in a loop only ever evicts its own
entries, never another container's. Evictions are counted by table
(`evictions`, exported by the service as alerter_state_evictions_total).

Being per replica, the tables need every event of a container at one
replica: with several replicas use partitioned subjects
(shared/partition.py), else a sequence split across replicas is missed.
"""
from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from shared.bounded import Bounded

O_CREAT = 0o100
_FD_EXEC_PREFIXES = ("/dev/fd/", "/proc/self/fd/")


class _PerContainer:
    """key -> value tables, one bounded LRU per container, at most
    `containers` of them (least recently used container dropped whole)."""

    def __init__(self, name: str, size: int, containers: int, evictions: dict[str, int]) -> None:
        self.name, self.size, self.containers = name, size, containers
        # put() refreshes the container and the key; has/pop/count do not
        self._t: Bounded[str, Bounded] = Bounded(containers, lambda _cid, old: self._evicted(len(old)))
        self._evictions = evictions

    def _evicted(self, n: int = 1) -> None:
        self._evictions[self.name] = self._evictions.get(self.name, 0) + n

    def _key_evicted(self, _key: object, _value: object) -> None:
        self._evicted()

    def put(self, cid: str, key, value=True) -> None:
        t = self._t.touch(cid)
        if t is None:
            t = self._t[cid] = Bounded(self.size, self._key_evicted)
        t[key] = value

    def has(self, cid: str, key) -> bool:
        t = self._t.get(cid)
        return t is not None and key in t

    def pop(self, cid: str, key):
        t = self._t.get(cid)
        return None if t is None else t.pop(key, None)

    def drop_older(self, before: float, when: Callable[[object], float]) -> None:
        """Drop entries whose `when(value)` is before `before` (a table's oldest come first)."""
        for cid, t in list(self._t.items()):
            while t and when(next(iter(t.values()))) < before:
                t.popitem(last=False)
            if not t:
                del self._t[cid]

    def count(self, cid: str) -> int:
        return len(self._t.get(cid) or ())

    def __len__(self) -> int:
        return sum(len(t) for t in self._t.values())


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


STATE_KINDS = frozenset({"exec", "open", "rename", "link", "memfd"})  # what annotate() and late() read
LATE_WINDOW_S = 30.0  # how late a cause may arrive: far more than batching and subjects reorder by


def _held_at(value: object) -> float:
    return value[2]  # type: ignore[index]


class ExecState:
    def __init__(self, size: int = 1024, containers: int = 512, late_window_s: float = LATE_WINDOW_S) -> None:
        self.late_window_s = late_window_s
        self.evictions: dict[str, int] = {}   # table -> entries dropped to stay bounded
        t = lambda name: _PerContainer(name, size, containers, self.evictions)  # noqa: E731
        self.created = t("created")           # container -> {absolute path}
        self.memfd = t("memfd")               # container or "host" -> {pid}
        self.execs_by_path = t("execs_by_path")  # container -> {path: (exec event, rules it matched)}
        self.execs_by_pid = t("execs_by_pid")    # container or "host" -> {pid: same}

    def remember_exec(self, ev: dict, rules: set[str], now: float | None = None) -> None:
        """An exec and the rules it matched, in case its cause arrives late."""
        held = (ev, rules, time.monotonic() if now is None else now)
        cid = _cid(ev)
        if cid:
            for p in {_abs(ev.get("filename"), ev), _abs(_procd(ev).get("exe"), ev)}:
                if p:
                    self.execs_by_path.put(cid, p, held)
        self.execs_by_pid.put(cid or "host", ev.get("pid"), held)

    def expire(self, now: float | None = None) -> None:
        """Forget execs held longer than the window."""
        before = (time.monotonic() if now is None else now) - self.late_window_s
        self.execs_by_path.drop_older(before, _held_at)
        self.execs_by_pid.drop_older(before, _held_at)

    def late(self, ev: dict) -> list[tuple[dict, set[str]]]:
        """Execs seen before `ev` that `ev` (an earlier create or memfd_create)
        explains: each annotated, with the rules it already matched."""
        kind, out = ev.get("kind"), []
        if kind == "open" or kind in ("rename", "link"):
            cid = _cid(ev)
            p = _abs(ev.get("path") if kind == "open" else ev.get("newpath"), ev)
            hit = self.execs_by_path.pop(cid, p) if cid and p else None
        elif kind == "memfd":
            hit = self.execs_by_pid.pop(_cid(ev) or "host", ev.get("pid"))
        else:
            return out
        if hit and time.monotonic() - hit[2] <= self.late_window_s and _before(ev, hit[0]):
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
                    self.created.put(cid, p)
        elif kind in ("rename", "link"):
            cid = _cid(ev)
            p = _abs(ev.get("newpath"), ev)
            if cid and ok and p:
                self.created.put(cid, p)
        elif kind == "memfd" and ok:
            self.memfd.put(_cid(ev) or "host", ev.get("pid"))
        return ev

    def _exec(self, ev: dict) -> dict:
        proc = ev.get("proc") or {}
        filename = ev.get("filename")
        exe = proc.get("exe") if isinstance(proc, dict) else None
        cid = _cid(ev)
        facts = {}
        if cid:
            for p in {_abs(filename, ev), _abs(exe, ev)}:
                if p and self.created.has(cid, p):
                    facts["is_exe_upper_layer"] = True
        names = [n for n in (filename, exe) if isinstance(n, str)]
        comms = [n for n in (ev.get("comm"), proc.get("name") if isinstance(proc, dict) else None)
                 if isinstance(n, str)]
        # execveat(AT_EMPTY_PATH) of a memfd: the kernel names the task after the memfd
        if any(n.startswith(("/memfd:", "memfd:")) for n in names) or any(c.startswith("memfd:") for c in comms):
            facts["is_exe_from_memfd"] = True
        elif self.memfd.has(cid or "host", ev.get("pid")) and (
                not filename or any(n.startswith(_FD_EXEC_PREFIXES) for n in names)):
            facts["is_exe_from_memfd"] = True
        if not facts:
            return ev
        return {**ev, "proc": {**(proc if isinstance(proc, dict) else {}), **facts}}


def _before(a: dict, b: dict) -> bool:
    ta, tb = a.get("ts"), b.get("ts")
    return not (isinstance(ta, int) and isinstance(tb, int)) or ta <= tb
