"""Which processes the probe never traces: Eunomia's own, decided locally.

Nothing on the bus can add an exclusion. The excluded processes are:
- the probe's own process;
- with `exclude_children`, its direct children (under `eunomia up`: the
  embedded nats-server and podman API service the supervisor started; a
  process cannot make itself our child);
- ProbeConfig.exclude_pids (the operator's command line);
- every process in ProbeConfig.exclude_cgroups (cgroup-v2 directories such as
  the systemd units of the other Eunomia services: only root can move a
  process into them).

Each excluded process is held by a pidfd opened when it is excluded; when the
pidfd reports the exit, the kernel map entry is removed at once, so a reused
pid is traced again.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shared import log

_log = log.get("probe.exclusion")
# cgroup v2 mount: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hierarchies
CGROUP_ROOT = next((p for p in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
                    if (p / "cgroup.procs").exists()), Path("/sys/fs/cgroup"))


def children_of(pid: int) -> set[int]:
    """Direct children of process `pid` (every thread's children file)."""
    out: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out.update(int(c) for c in (t / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cgroup_procs(cgroup: str) -> set[int]:
    """Processes in a cgroup-v2 directory (relative to /sys/fs/cgroup, or absolute) and its children."""
    root = Path(cgroup) if cgroup.startswith("/sys/") else CGROUP_ROOT / cgroup.lstrip("/")
    out: set[int] = set()
    try:
        files = [root / "cgroup.procs", *root.rglob("cgroup.procs")]
    except OSError:
        return out
    for f in files:
        try:
            out.update(int(p) for p in f.read_text().split())
        except (OSError, ValueError):
            continue
    return out


def cgroup_of(pid: int) -> str | None:
    """The cgroup-v2 path of `pid` (the "0::" line of /proc/<pid>/cgroup)."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return None


def _within(path: str | None, top: str) -> bool:
    return path is not None and (path == top or path.startswith(top + "/"))


class Exclusions:
    """The kernel's `excluded` map, kept equal to the live processes we exclude."""

    def __init__(self, table, stats, children: bool = False, pids: tuple[int, ...] = (),
                 cgroups: tuple[str, ...] = ()) -> None:
        self.table, self.stats = table, stats
        self.children, self.static_pids, self.cgroups = children, pids, cgroups
        self._fds: dict[int, int] = {}  # pid -> pidfd

    @property
    def pids(self) -> set[int]:
        return set(self._fds)

    def refresh(self) -> None:
        """Exclude what is ours now (called at start and periodically)."""
        me = os.getpid()
        self._add(me, lambda: True)
        for pid in self.static_pids:
            self._add(pid, lambda: True)
        if self.children:
            for pid in children_of(me):
                self._add(pid, lambda pid=pid: parent_of(pid) == me)
        for cg in self.cgroups:
            want = "/" + cg.removeprefix(str(CGROUP_ROOT)).strip("/")
            for pid in cgroup_procs(cg):
                self._add(pid, lambda pid=pid, want=want: _within(cgroup_of(pid), want))
        self.stats.set("probe_excluded_pids", len(self._fds))

    def _add(self, pid: int, still_ours) -> None:
        if pid in self._fds:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already
            return
        if not still_ours():  # checked after the pidfd pins the process: no reused pid slips in
            os.close(fd)
            return
        try:
            self.table[self.table.Key(pid)] = self.table.Leaf(1)
        except Exception as e:  # map full
            os.close(fd)
            self.stats.inc("probe_exclude_failed_total")
            _log.error("cannot exclude pid %d: %s", pid, e)
            return
        self._fds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid)
        _log.info("excluding pid %d", pid)

    def _exited(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is None:
            return
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        try:
            del self.table[self.table.Key(pid)]
        except KeyError:
            pass
        self.stats.inc("probe_exclusions_ended_total")
        self.stats.set("probe_excluded_pids", len(self._fds))
        _log.info("pid %d exited: no longer excluded", pid)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._fds.clear()
