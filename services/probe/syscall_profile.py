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

from shared.cgroupfs import GONE_GRACE_S, GONE_SCAN_S, GoneCgroups, live_cgroup_ids

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


class Pruner:
    """Frees bitmaps of cgroups gone for more than `grace_s`; scans at most every `interval_s`."""

    def __init__(self, grace_s: float = GONE_GRACE_S, interval_s: float = GONE_SCAN_S, live=live_cgroup_ids) -> None:
        self.gone = GoneCgroups(grace_s, interval_s, live)

    def maybe_prune(self, bpf, now: float | None = None) -> int:
        """Delete what has been gone long enough; returns how many were deleted."""
        table = bpf[BITMAP_MAP]
        pruned = 0
        for cg in self.gone.expired(lambda: [k.value for k in table.keys()], now):
            try:
                del table[table.Key(cg)]
                pruned += 1
            except KeyError:
                pass
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
