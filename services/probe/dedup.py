"""Repeat counts of events the kernel deduplicated (bpf/file.bpf.c `dedup`).

The kernel sends the first of a run of identical file events (same process,
uid, cgroup, comm, kind, flags, mode and path), or process_vm_readv/writev and
ptrace calls (same process, target and direction or request), and counts the rest
for a window and until this side reports them. This side
remembers the events it sent, and once a window is over reports its count as
a copy of the first event with `repeat` (how many more times it happened),
`first_ts` and the time of the last repeat; then it deletes the entry.
"""
from __future__ import annotations

from shared.bounded import Bounded
from shared.filterplan import PATH_KINDS
from shared.schema import new_event_id

from .decode import DEDUP_HASH, KEYED_DEDUP_KINDS
from .map_read import entries

KINDS = (*PATH_KINDS, *KEYED_DEDUP_KINDS)  # the kinds the kernel deduplicates (path_stash(), bpf/priv.bpf.c)
_MASK = (1 << 64) - 1
DEDUP_FAILED = 0x80000000  # bpf/priv.bpf.c: a failed call's flags


def dedup_flags(ev: dict) -> int:
    """What the kernel compares besides the path (path_stash's `dflags`)."""
    k = ev["kind"]
    if k in KEYED_DEDUP_KINDS:  # the direction (procvm: 1 write) or the request, and the outcome
        v = (1 if ev.get("syscall") == "process_vm_writev" else 0) if k == "procvm" else (ev.get("request") or 0)
        ret = ev.get("ret")
        failed = isinstance(ret, int) and ret < 0 or ev.get("ret_unknown")  # the kernel saw RET_UNKNOWN < 0
        return (v & 0x7FFFFFFF) | (DEDUP_FAILED if failed else 0)
    if k == "chown":  # the kernel compares the new owner as passed (-1: unchanged)
        v = ev.get("owner_uid")
        return 0xFFFFFFFF if v is None else v & 0xFFFFFFFF
    v = ev.get("mode") if k in ("chmod", "mkdir") else ev.get("length") if k == "truncate" else ev.get("flags")
    return (v or 0) & 0xFFFFFFFF


def dedup_mode(ev: dict) -> int:
    """The kernel's second number in the key: an open's mode, a chown's new group as passed."""
    if ev["kind"] == "chown":
        v = ev.get("owner_gid")
        return 0xFFFFFFFF if v is None else v & 0xFFFFFFFF
    return (ev.get("mode") or 0) if ev["kind"] == "open" else 0


class Dedup:
    """Sent events by dedup key, and the sweep that turns kernel counts into repeat events."""

    def __init__(self, node: str, max_keys: int = 16384) -> None:
        self.node, self.max_keys = node, max_keys
        self._sent: Bounded[tuple, dict] = Bounded(max_keys)  # kernel dedup key -> event sent
        self.orphans = 0  # counts reported for events no longer remembered

    def remember(self, ev: dict) -> None:
        """Called for each event sent; takes the kernel's path hash off it."""
        h = ev.pop(DEDUP_HASH, 0)
        if not h:
            return
        key = (ev["cgroup_id"], ev["kind"], dedup_flags(ev), dedup_mode(ev), ev["pid"], ev["uid"], ev["comm"],
               h & _MASK)
        self._sent[key] = ev

    def sweep(self, table, kind_names: dict[int, str], window_ns: int, now_boot_ns: int,
              boot_to_wall: int) -> list[dict]:
        """Repeat events for every window that is over; their kernel entries are deleted."""
        out = []
        for k, v in entries(table):
            if now_boot_ns - v.first_ts < window_ns:
                continue
            v = _take(table, k)  # atomically: a repeat counted meanwhile is in this count, or in a new entry
            if v is None:
                continue
            if now_boot_ns - v.first_ts < window_ns:  # the kernel started a new window meanwhile: put it back
                table[k] = v
                continue
            count, last_ts = v.count, v.last_ts
            kind = kind_names.get(k.kind)
            if not count or kind is None:
                continue
            comm = bytes(k.comm).partition(b"\0")[0].decode("utf-8", "replace")
            first = self._sent.pop((k.cgroup_id, kind, k.flags, k.mode, k.pid, k.uid, comm, k.path_hash), None)
            if first is None:
                self.orphans += count
                continue
            out.append({**first, "id": new_event_id(self.node), "ts": last_ts + boot_to_wall,
                        "first_ts": first["ts"], "repeat": count})
        return out


def _take(table, key):
    """The entry of `key`, deleted in the same step (BPF_MAP_LOOKUP_AND_DELETE_ELEM, hash maps
    since Linux 5.14; before, a read then a delete, which can lose a repeat counted between the
    two). None when there is no entry."""
    import ctypes

    from bcc.libbcc import lib
    leaf = table.Leaf()
    if lib.bpf_lookup_and_delete(table.map_fd, ctypes.byref(key), ctypes.byref(leaf)) == 0:
        return leaf
    try:
        leaf = table[key]
        del table[key]
    except KeyError:
        return None
    return leaf
