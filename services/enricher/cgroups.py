"""cgroup id -> container id.

The probe's `cgroup_id` is bpf_get_current_cgroup_id(): the inode number of
the task's cgroup-v2 directory. We index the v2 tree by inode (rescanning,
rate-limited, when an id is unknown), parse the directory's path with the
container runtimes' naming patterns, and cache the answer. /proc/<pid>/cgroup
is the fallback when the directory is already gone.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from shared import log
from shared.bounded import Bounded
from shared.cgroupfs import ROOT_CANDIDATES, cgroup2_root

_log = log.get("enricher.cgroups")

_ID = r"([0-9a-f]{64})"
# (runtime, pattern on one path component), most specific first. The conmon
# cgroups (libpod-conmon-<id>, crio-conmon-<id>) hold the monitor, not the container.
COMPONENT_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("podman", re.compile(rf"^libpod-{_ID}(?:\.scope)?$")),
    ("docker", re.compile(rf"^docker-{_ID}\.scope$")),
    ("containerd", re.compile(rf"^cri-containerd-{_ID}(?:\.scope)?$")),
    ("cri-o", re.compile(rf"^crio-{_ID}(?:\.scope)?$")),
)
BARE_ID = re.compile(rf"^{_ID}$")

RESCAN_MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class CgroupMatch:
    container_id: str
    runtime: str


def parse_path(path: str) -> CgroupMatch | None:
    """The container a cgroup path names, or None for the host.

    Handles docker (docker-<id>.scope, /docker/<id>), containerd
    (cri-containerd-<id>.scope, /kubepods/.../<id>), cri-o (crio-<id>.scope)
    and podman (libpod-<id>, libpod-<id>.scope); the deepest match wins, so
    nested cgroups such as libpod-<id>.scope/container resolve too.
    """
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        comp = parts[i]
        for runtime, pat in COMPONENT_PATTERNS:
            m = pat.match(comp)
            if m:
                return CgroupMatch(m.group(1), runtime)
        m = BARE_ID.match(comp)
        if m and i > 0:
            above = parts[:i]
            if above[-1] == "docker":
                return CgroupMatch(m.group(1), "docker")
            if any(p.startswith("kubepods") for p in above) or above[-1] == "k8s.io":
                return CgroupMatch(m.group(1), "containerd")  # (CRI-O names its own: crio-<id>)
            if above[-1] in ("libpod_parent", "machine.slice"):
                return CgroupMatch(m.group(1), "podman")
    return None


def v2_path_of_pid(pid: int) -> str | None:
    """The cgroup-v2 path ("0::<path>" line) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("0::"):
                    return line[3:]
    except OSError:
        return None
    return None


class CgroupResolver:
    """Bounded cache of cgroup id -> CgroupMatch | None (host)."""

    def __init__(self, max_entries: int = 65536, root: Path | None = None) -> None:
        self.root = root if root is not None else cgroup2_root()
        self.max_entries = max_entries
        self._cache: Bounded[int, CgroupMatch | None] = Bounded(max_entries)   # resolve() hits refresh
        self._last_scan = 0.0              # monotonic
        self._last_scan_wall_ns = 0
        self._root_ino: int | None = None
        self.scans = 0
        self.unresolved = 0  # events whose cgroup could not be placed yet
        if self.root is None:
            _log.warning("no cgroup-v2 hierarchy at %s: containers resolve through /proc only",
                         " or ".join(map(str, ROOT_CANDIDATES)))

    def __len__(self) -> int:
        return len(self._cache)

    def _put(self, cgid: int, m: CgroupMatch | None) -> None:
        self._cache[cgid] = m

    def learn(self, cgid: int, m: CgroupMatch) -> None:
        self._put(cgid, m)

    def known(self, cgid: int) -> bool:
        return cgid in self._cache

    def cached(self, cgid: int) -> CgroupMatch | None:
        return self._cache.get(cgid)

    def walk(self) -> dict[int, CgroupMatch]:
        """Every container cgroup in the v2 tree by inode. Pure: safe in a thread."""
        found: dict[int, CgroupMatch] = {}
        if self.root is None:
            return found
        root = str(self.root)
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                m = parse_path(full[len(root):])
                if m is None:
                    continue
                try:
                    found[os.stat(full).st_ino] = m
                except OSError:
                    continue
        return found

    def apply(self, found: dict[int, CgroupMatch], started_wall_ns: int) -> None:
        """Remember the result of a walk that started at `started_wall_ns`."""
        self._last_scan = time.monotonic()
        self._last_scan_wall_ns = max(self._last_scan_wall_ns, started_wall_ns)
        self.scans += 1
        for ino, m in found.items():
            self._put(ino, m)

    def scan(self) -> dict[int, CgroupMatch]:
        started = time.time_ns()
        found = self.walk()
        self.apply(found, started)
        return found

    def resolve(self, cgid: int, ts_ns: int = 0, pid: int = 0) -> tuple[bool, CgroupMatch | None]:
        """(resolved, match). match None = host. resolved False = unknown for now.

        Order: cache, a rate-limited rescan of the tree (the cgroup existed when
        the event happened), /proc/<pid>/cgroup. Root cgroup (1) and 0 are host.
        """
        if cgid in self._cache:
            self._cache.move_to_end(cgid)
            return True, self._cache[cgid]
        if cgid <= 1:
            return True, None
        if self.root is not None and self.root_ino() == cgid:
            self._put(cgid, None)
            return True, None
        if time.monotonic() - self._last_scan >= RESCAN_MIN_INTERVAL_S:
            self.scan()
            if cgid in self._cache:
                return True, self._cache[cgid]
        if pid:
            m = self._from_proc(cgid, pid)
            if m is not None:
                self._put(cgid, m)
                return True, m
        if ts_ns and self._last_scan_wall_ns > ts_ns:
            # scanned after the event and not a container cgroup: host (or a container gone already)
            self._put(cgid, None)
            return True, None
        self.unresolved += 1
        return False, None

    def _from_proc(self, cgid: int, pid: int) -> CgroupMatch | None:
        path = v2_path_of_pid(pid)
        if not path:
            return None
        m = parse_path(path)
        if m is None:
            return None
        if self.root is not None:  # the pid may have moved: trust it only if the inode agrees
            try:
                if os.stat(str(self.root) + path).st_ino != cgid:
                    return None
            except OSError:
                pass  # directory gone: take the path's word
        return m

    def root_ino(self) -> int | None:
        if self._root_ino is None and self.root is not None:
            try:
                self._root_ino = os.stat(self.root).st_ino
            except OSError:
                return None
        return self._root_ino
