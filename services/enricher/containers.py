"""Known containers on this node: cgroup id -> container record.

Joins the cgroup resolver (which container a cgroup belongs to) and the
runtime API client (its name, image, labels). Records are the `container`
shape of shared/schema.py plus `cgroup_id`, for the control reply.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from .cgroups import CgroupMatch, CgroupResolver
from .runtime_api import ContainerInfo, RuntimeClient, k8s_of


class ContainerRegistry:
    def __init__(self, cgroups: CgroupResolver, runtime: RuntimeClient, max_entries: int = 4096) -> None:
        self.cgroups, self.runtime, self.max_entries = cgroups, runtime, max_entries
        # container id -> (match, cgroup ids, last seen wall ns, cgroup id seen last)
        self._known: OrderedDict[str, tuple[CgroupMatch, set[int], int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def note(self, cgid: int, m: CgroupMatch, seen: bool = True) -> None:
        entry = self._known.get(m.container_id)
        if entry is None:
            entry = (m, set(), 0, cgid)
        cg = entry[1]
        if len(cg) < 64:
            cg.add(cgid)
        self._known[m.container_id] = (m, cg, time.time_ns() if seen else entry[2], cgid)
        self._known.move_to_end(m.container_id)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)

    def learn(self, cgid: int, m: CgroupMatch) -> None:
        """A container cgroup seen being created (CgroupWatcher)."""
        self.cgroups.learn(cgid, m)
        self.note(cgid, m, seen=False)

    async def rescan(self) -> set[str]:
        """Walk the cgroup tree in a thread; note every container there. Returns their ids."""
        started = time.time_ns()
        found = await asyncio.to_thread(self.cgroups.walk)
        self.cgroups.apply(found, started)
        for cgid, m in found.items():
            self.note(cgid, m, seen=False)
        return {m.container_id for m in found.values()}

    def resolve(self, cgid: int, ts_ns: int, pid: int) -> CgroupMatch | None:
        ok, m = self.cgroups.resolve(cgid, ts_ns, pid)
        if m is not None:
            self.note(cgid, m)
        return m

    def needs_lookup(self, m: CgroupMatch) -> bool:
        fresh, _ = self.runtime.cached(m.container_id)
        return not fresh

    @staticmethod
    def view(m: CgroupMatch, info: ContainerInfo | None) -> tuple[dict, dict | None]:
        """(`container`, `k8s`) of an event."""
        labels = info.labels if info else {}
        container = {
            "id": m.container_id,
            "name": info.name if info else None,
            "image": info.image if info else None,
            "runtime": m.runtime,
            "labels": labels,
        }
        return container, k8s_of(labels)

    def view_cached(self, m: CgroupMatch) -> tuple[dict, dict | None]:
        return self.view(m, self.runtime.cached(m.container_id)[1])

    async def listing(self, timeout: float, all_: bool = False) -> list[dict]:
        """Containers with cgroup ids (metadata looked up, within `timeout`).

        Only those whose cgroup exists now, unless `all_` (then also the ones
        seen earlier, with running False)."""
        running = await self.rescan()
        items = [(cid, e) for cid, e in self._known.items() if all_ or cid in running]
        tasks = [self.runtime.start(cid) for cid, (m, *_) in items if self.needs_lookup(m)]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        out = []
        for cid, (m, cgids, seen, last) in items:
            container, k8s = self.view_cached(m)
            out.append({**container, "k8s": k8s, "cgroup_id": last, "cgroup_ids": sorted(cgids),
                        "running": cid in running, "last_seen": seen or None})
        return out
