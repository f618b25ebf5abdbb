"""The cgroup-v2 tree, as every service finds it: the root, the ids that
exist now (a cgroup id is its directory's inode), and which tracked ids
have been gone long enough to forget."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT_CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))  # pure v2, hybrid
GONE_GRACE_S = 300.0      # how long state of a removed cgroup is kept (counters stay visible)
GONE_SCAN_S = 30.0        # how often the tree is walked to find removed cgroups


def cgroup2_root() -> Path | None:
    """/sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on hybrid; None without v2."""
    for root in ROOT_CANDIDATES:
        if (root / "cgroup.controllers").exists():
            return root
    return None


def live_cgroup_ids() -> set[int]:
    """Inode numbers (= cgroup ids) of every cgroup-v2 directory that exists now (empty without v2)."""
    root = cgroup2_root()
    if root is None:
        return set()
    ids = {os.stat(root).st_ino}
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            try:
                ids.add(os.stat(os.path.join(dirpath, d)).st_ino)
            except FileNotFoundError:  # removed while we walk
                pass
    return ids


class GoneCgroups:
    """Which tracked cgroup ids have been gone for `grace_s`; walks the tree at most every `interval_s`."""

    def __init__(self, grace_s: float = GONE_GRACE_S, interval_s: float = GONE_SCAN_S,
                 live: Callable[[], set[int]] = live_cgroup_ids) -> None:
        self.grace_s, self.interval_s, self.live = grace_s, interval_s, live
        self._gone_since: dict[int, float] = {}
        self._last = float("-inf")

    def expired(self, tracked: Callable[[], Iterable[int]], now: float | None = None) -> list[int]:
        """The ids `tracked()` lists that are gone longer than the grace (each returned once);
        `tracked` is only called when it is time to look."""
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval_s:
            return []
        self._last = now
        live = self.live()
        if not live:  # no cgroup-v2 tree visible: never guess
            return []
        gone = set(tracked()) - live
        self._gone_since = {cg: self._gone_since.get(cg, now) for cg in gone}
        out = [cg for cg, since in self._gone_since.items() if now - since >= self.grace_s]
        for cg in out:
            del self._gone_since[cg]
        return out


class CgroupPaths:
    """cgroup id -> directory, from a walk of the tree redone (at most every `rescan_s`) when an
    id is not known yet."""

    def __init__(self, rescan_s: float = 10.0, max_entries: int = 65536) -> None:
        self.rescan_s, self.max_entries = rescan_s, max_entries
        self._paths: dict[int, Path] = {}
        self._last = float("-inf")

    def path(self, cgid: int) -> Path | None:
        p = self._paths.get(cgid)
        if p is None and time.monotonic() - self._last >= self.rescan_s:
            self._rescan()
            p = self._paths.get(cgid)
        return p

    def _rescan(self) -> None:
        self._last = time.monotonic()
        root = cgroup2_root()
        if root is None:
            return
        paths: dict[int, Path] = {}
        for dirpath, _dirs, _files in os.walk(root):
            try:
                paths[os.stat(dirpath).st_ino] = Path(dirpath)
            except FileNotFoundError:
                continue
            if len(paths) >= self.max_entries:
                break
        self._paths = paths


def cpu_usage_ns(cgroup_dir: Path) -> int | None:
    """CPU time of a cgroup (cpu.stat usage_usec, which v2 keeps without the cpu controller), in ns."""
    try:
        for line in (cgroup_dir / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
    except (OSError, ValueError):
        return None
    return None
