"""Known containers on this node: cgroup id -> container record.

Joins the cgroup resolver (which container a cgroup belongs to) and the
runtime clients (its name, image, labels, pod). The cgroup path says which
runtime made a container; `Runtimes` picks the client that can answer for it
(CRI for containerd/CRI-O, the Engine API for podman/docker, the other one
when only that socket exists). Records are the `container` shape of
shared/schema.py plus `cgroup_id`, for the control reply.

Metadata is never silently empty: a container that has none carries
`metadata_missing` (the reason) and is counted once per reason in
enricher_metadata_missing_total{reason}.
"""
from __future__ import annotations

import asyncio
import time

from shared.bounded import Bounded
from shared.stats import Stats

from .cgroups import CgroupMatch, CgroupResolver
from .k8s import k8s_of
from .lookups import CachedLookups, ContainerInfo

CRI_RUNTIMES = frozenset({"containerd", "cri-o"})
NO_API = "no_runtime_api"       # no client of this runtime is configured or its socket is absent
CHOICE_TTL_S = 1.0


class Runtimes:
    """Which client answers for a runtime; the choice is re-checked every CHOICE_TTL_S (sockets come and go)."""

    def __init__(self, engine: CachedLookups | None, cri: CachedLookups | None) -> None:
        self.engine, self.cri = engine, cri
        self.clients = tuple(c for c in (cri, engine) if c is not None)
        self._choice: dict[str, tuple[float, CachedLookups | None]] = {}

    def client_for(self, runtime: str) -> CachedLookups | None:
        hit = self._choice.get(runtime)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        order = (self.cri, self.engine) if runtime in CRI_RUNTIMES else (self.engine, self.cri)
        client = next((c for c in order if c is not None and c.socket() is not None), None)
        self._choice[runtime] = (now + CHOICE_TTL_S, client)
        return client


class ContainerRegistry:
    def __init__(self, cgroups: CgroupResolver, runtimes: Runtimes, max_entries: int = 4096,
                 stats: Stats | None = None) -> None:
        self.cgroups, self.runtimes, self.max_entries, self.stats = cgroups, runtimes, max_entries, stats
        # container id -> (match, cgroup ids, last seen wall ns, cgroup id seen last)
        self._known: Bounded[str, tuple[CgroupMatch, set[int], int, int]] = Bounded(max_entries)
        self._missing_counted: Bounded[tuple[str, str], None] = Bounded(max_entries)

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

    def learn(self, cgid: int, m: CgroupMatch) -> None:
        """A container cgroup seen being made (the probe's cgroup event): ask its runtime now, so that a
        container living for milliseconds still gets its names."""
        self.cgroups.learn(cgid, m)
        self.note(cgid, m, seen=False)
        if self.needs_lookup(m):
            self.lookup(m)

    async def rescan(self) -> set[str]:
        """Walk the cgroup tree in a thread; note every container there. Returns their ids."""
        started = time.time_ns()
        found = await asyncio.to_thread(self.cgroups.walk)
        self.cgroups.apply(found, started)
        for cgid, m in found.items():
            self.note(cgid, m, seen=False)
        return {m.container_id for m in found.values()}

    def known(self, cgid: int) -> bool:
        """Whether `cgid` is resolved for good (resolve() answers it from the cache)."""
        return self.cgroups.known(cgid)

    def resolve(self, cgid: int, ts_ns: int, pid: int) -> CgroupMatch | None:
        ok, m = self.cgroups.resolve(cgid, ts_ns, pid)
        if m is not None:
            self.note(cgid, m)
        return m

    def needs_lookup(self, m: CgroupMatch) -> bool:
        c = self.runtimes.client_for(m.runtime)
        return c is not None and not c.cached(m.container_id)[0]

    def lookup(self, m: CgroupMatch) -> asyncio.Task | None:
        c = self.runtimes.client_for(m.runtime)
        return c.start(m.container_id) if c is not None else None

    def info(self, m: CgroupMatch) -> tuple[ContainerInfo | None, str | None]:
        """(metadata, why it is missing)."""
        c = self.runtimes.client_for(m.runtime)
        if c is None:
            return None, NO_API
        info = c.cached(m.container_id)[1]
        return info, (None if info is not None else c.missing_reason(m.container_id))

    def _count_missing(self, cid: str, reason: str) -> None:
        key = (cid, reason)
        if key in self._missing_counted:
            return
        self._missing_counted[key] = None
        if self.stats is not None:
            self.stats.inc("enricher_metadata_missing_total", reason=reason)

    @staticmethod
    def view(m: CgroupMatch, info: ContainerInfo | None, missing: str | None = None) -> tuple[dict, dict | None]:
        """(`container`, `k8s`) of an event."""
        if info is None:
            return {"id": m.container_id, "name": None, "image": None, "runtime": m.runtime, "labels": {},
                    "metadata_missing": missing or "unknown"}, None
        container = {
            "id": m.container_id,
            "name": info.name,
            "image": info.image,
            "image_digest": info.image_digest,
            "image_id": info.image_id,
            "runtime": m.runtime,
            "labels": info.labels,
            "privileged": info.privileged,
            "host_network": info.host_network,
            "host_pid": info.host_pid,
            "host_ipc": info.host_ipc,
            "metadata_missing": None,
        }
        return container, info.k8s if info.k8s is not None else k8s_of(info.labels)

    def mounts(self, m: CgroupMatch) -> list[dict[str, object]] | None:
        """The container's mounts from the runtime (None: unknown), for exec events
        (container.mount.*): every event carrying them would cost bytes for nothing."""
        info = self.info(m)[0]
        return None if info is None or info.mounts is None else [x.view() for x in info.mounts]

    def view_cached(self, m: CgroupMatch) -> tuple[dict, dict | None]:
        info, missing = self.info(m)
        if info is None:
            self._count_missing(m.container_id, missing or "unknown")
        return self.view(m, info, missing)

    async def listing(self, timeout: float, all_: bool = False) -> list[dict]:
        """Containers with cgroup ids (metadata looked up, within `timeout`).

        Only those whose cgroup exists now, unless `all_` (then also the ones
        seen earlier, with running False)."""
        running = await self.rescan()
        items = [(cid, e) for cid, e in self._known.items() if all_ or cid in running]
        tasks = [t for cid, (m, *_) in items if self.needs_lookup(m) and (t := self.lookup(m)) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        out = []
        for cid, (m, cgids, seen, last) in items:
            container, k8s = self.view(m, *self.info(m))
            out.append({**container, "k8s": k8s, "cgroup_id": last, "cgroup_ids": sorted(cgids),
                        "running": cid in running, "last_seen": seen or None})
        return out
