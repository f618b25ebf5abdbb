"""Read the per-cgroup syscall bitmaps that bpf/syscalls.bpf.c fills.

The probe calls these from its ctl handler (op "syscalls" and
"syscalls_reset"); `bpf` is the loaded bcc BPF object holding the
`sc_bitmaps` and `sc_counters` maps. Map reads are single bpf() syscalls,
cheap enough for the event loop.

Bitmaps of cgroups that are gone (exited containers) are freed by `Pruner`
a grace period after they go, so the bounded map does not fill up with the
dead while a profile can still be made just after a container exits.
"""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

BITMAP_MAP = b"sc_bitmaps"
COUNTERS_MAP = b"sc_counters"
WORD_BITS = 64
# Index -> Stats counter name, matching SC_CNT_* in bpf/syscalls.bpf.c.
COUNTER_NAMES = ("seccomp_cgroups_untracked_total", "seccomp_syscall_out_of_range_total")


def _key(bpf, cgroup_id: int):
    table = bpf[BITMAP_MAP]
    return table, table.Key(cgroup_id)


def dump(bpf, cgroup_id: int) -> list[int]:
    """Sorted syscall numbers seen in cgroup `cgroup_id` ([] if none)."""
    table, key = _key(bpf, int(cgroup_id))
    try:
        bits = table[key]
    except KeyError:
        return []
    return [i * WORD_BITS + b
            for i, word in enumerate(bits.w) if word
            for b in range(WORD_BITS) if word >> b & 1]


def reset(bpf, cgroup_id: int) -> bool:
    """Forget what cgroup `cgroup_id` did; True if it had a record."""
    table, key = _key(bpf, int(cgroup_id))
    try:
        del table[key]
    except KeyError:
        return False
    return True


def tracked_cgroups(bpf) -> int:
    """How many cgroups have a bitmap (for a gauge)."""
    return sum(1 for _ in bpf[BITMAP_MAP].keys())


def counters(bpf) -> dict[str, int]:
    """Kernel-side drop counters, by Stats counter name (cumulative)."""
    table = bpf[COUNTERS_MAP]
    return {name: int(table[ctypes.c_int(i)].value) for i, name in enumerate(COUNTER_NAMES)}


def live_cgroup_ids() -> set[int]:
    """Inode numbers (= cgroup ids) of every cgroup-v2 directory that exists now."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            ids = {os.stat(root).st_ino}
            for dirpath, dirnames, _ in os.walk(root):
                for d in dirnames:
                    try:
                        ids.add(os.stat(os.path.join(dirpath, d)).st_ino)
                    except FileNotFoundError:  # removed while we walk
                        pass
            return ids
    return set()


class Pruner:
    """Frees bitmaps of cgroups gone for more than `grace_s`; scans at most every `interval_s`."""

    def __init__(self, grace_s: float = 600.0, interval_s: float = 30.0, live=live_cgroup_ids) -> None:
        self.grace_s, self.interval_s, self.live = grace_s, interval_s, live
        self._gone_since: dict[int, float] = {}
        self._last = float("-inf")

    def maybe_prune(self, bpf, now: float | None = None) -> int:
        """Delete what has been gone long enough; returns how many were deleted."""
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval_s:
            return 0
        self._last = now
        live = self.live()
        if not live:  # no cgroup-v2 tree visible: never guess
            return 0
        table = bpf[BITMAP_MAP]
        tracked = {k.value for k in table.keys()}
        gone = tracked - live
        self._gone_since = {cg: self._gone_since.get(cg, now) for cg in gone}
        pruned = 0
        for cg, since in list(self._gone_since.items()):
            if now - since >= self.grace_s:
                try:
                    del table[table.Key(cg)]
                    pruned += 1
                except KeyError:
                    pass
                del self._gone_since[cg]
        return pruned


_PRUNER = Pruner()  # one probe per process


def export(bpf, stats, pruner: Pruner | None = None) -> None:
    """Copy the kernel-side counters into `stats` (shared.stats.Stats), as
    counters that only grow, plus the gauge seccomp_tracked_cgroups; prune
    the bitmaps of cgroups long gone (seccomp_cgroups_pruned_total). Call it
    from the probe's periodic stats tick."""
    stats.inc("seccomp_cgroups_pruned_total", (pruner or _PRUNER).maybe_prune(bpf))
    for name, value in counters(bpf).items():
        stats.inc(name, max(0, value - stats.get(name)))  # present as 0 from the start
    stats.set("seccomp_tracked_cgroups", tracked_cgroups(bpf))
