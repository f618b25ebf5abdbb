"""Network flows aggregated in the kernel (`flows` in bpf/net.bpf.c) -> "flow" events.

The kernel counts connects and accepts per (cgroup, direction, family,
socket type, remote address, remote port, local port); no event per
connection. collect() returns one event per flow that changed since the
previous call, with *delta* counts, so consumers add them up. Flows idle
for longer than `idle_s` are deleted once their counts were returned, so
the bounded map keeps room for new ones; a flow that comes back starts
afresh (new first_ts). A new flow that finds the map full is counted by the
kernel (`map_full`), never dropped silently.
"""
from __future__ import annotations

import time

from shared.netnames import SOCK_TYPE_PROTO, ip_text
from shared.schema import new_event_id

from .map_read import entries

DIRECTIONS = ("connect", "accept")
_ZERO16 = bytes(16)


def _addr(family: int, raw: bytes) -> str | None:
    if raw == _ZERO16:
        return None  # unknown (accept without a peer address, connect not bound)
    return ip_text(family, raw)


class FlowReader:
    """Reads and prunes the kernel's flow map; call collect() periodically (~50 ms for 16k flows)."""

    def __init__(self, bpf, node: str, idle_s: float = 120.0) -> None:
        self.node = node
        self.idle_ns = int(idle_s * 1e9)
        self.table = bpf[b"flows"]
        self._full = bpf[b"flows_full"]
        self._sent: dict[bytes, tuple[int, int, int]] = {}  # key -> (first_seen, count, failed) returned
        self.emitted = 0   # flow events returned by collect()
        self.pruned = 0    # idle flows deleted from the map
        self.map_full = 0  # new flows the kernel could not add: map full (cumulative)
        self.active = 0    # flows in the map at the last collect()

    def collect(self) -> list[dict]:
        """One event per flow whose counts changed since the previous call (delta counts)."""
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        to_wall = time.time_ns() - boot_now
        out, sent, idle = [], {}, []
        for k, v in entries(self.table):
            key = bytes(k)
            count, failed, last = v.count, v.failed, v.last_seen
            sent[key] = (v.first_seen, count, failed)
            first, old_count, old_failed = self._sent.get(key, (0, 0, 0))
            if first != v.first_seen:  # new, or deleted and made again
                old_count = old_failed = 0
            if count != old_count or failed != old_failed:
                out.append(self._event(k, v, count - old_count, failed - old_failed, to_wall))
            if boot_now - last > self.idle_ns:
                idle.append((k, key, last))
        self._sent = sent
        self.active = len(sent)
        for k, key, last in idle:
            try:
                if self.table[k].last_seen != last:
                    continue  # used again just now: keep it (its new counts come next time)
                del self.table[k]
            except KeyError:
                pass
            del self._sent[key]
            self.active -= 1
            self.pruned += 1
        self.map_full = self._full[0].value
        self.emitted += len(out)
        return out

    def _event(self, k, v, count: int, failed: int, to_wall: int) -> dict:
        family, direction = k.family, DIRECTIONS[k.direction & 1]
        connect = direction == "connect"
        last = v.last_seen + to_wall
        return {"id": new_event_id(self.node), "ts": last, "node": self.node, "kind": "flow",
                "pid": 0, "tid": 0, "ppid": None, "uid": None, "gid": None, "comm": "",
                "cgroup_id": k.cgroup_id, "direction": direction, "family": family,
                "proto": SOCK_TYPE_PROTO.get(k.type & 0xF), "daddr": _addr(family, bytes(k.raddr)),
                "dport": k.rport if connect else None, "saddr": _addr(family, bytes(v.laddr)),
                "sport": k.lport or None, "count": count, "failed": failed,
                "first_ts": v.first_seen + to_wall, "last_ts": last}
