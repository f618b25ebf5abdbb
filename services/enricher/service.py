"""EnricherService: eunomia.raw.<node> in, eunomia.event.<node>.<kind> out.

The raw subject carries one node's events in the kernel's order (the probe
publishes them as its ring buffer hands them out), so events are enriched
in arrival order: an exec is always seen before its program's opens.

Control (request/reply) on eunomia.ctl.enricher.<node>:
    {"op": "containers"[, "all": true]} -> {"containers": [{"id", "name", "image", "runtime",
        "labels", "k8s", "cgroup_id", "cgroup_ids", "running", "last_seen"}, ...]}
    {"op": "stats"} -> the Stats snapshot
(the protocol of shared/control.py)
"""
from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import orjson

from shared import busauth, log, partition, subjects
from shared.bus import Batcher, connect
from shared.config import CommonConfig
from shared.control import Control
from shared.stats import Stats, StatsPublisher
from shared.tasks import cancel_and_wait

from .cgroups import CgroupResolver
from .config import EnricherConfig
from .containers import ContainerRegistry, Runtimes
from .cri import CriClient
from .enrich import Enricher
from .proctable import ProcTable
from .runtime_api import RuntimeClient

_log = log.get("enricher")
GAUGE_INTERVAL_S = 1.0
SHUTDOWN_DRAIN_S = 2.0  # on stop, queued raw batches are enriched and sent this long


class EnricherService:
    name = "enricher"

    def __init__(self, cfg: EnricherConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.stats = Stats("enricher")
        self.procs = ProcTable(cfg.max_processes, cfg.exit_grace_s)
        self.runtime = RuntimeClient(cfg.runtime_sockets, cfg.lookup_timeout_s, cfg.container_ttl_s,
                                     cfg.negative_ttl_s, cfg.max_containers, self.stats)
        self.cri = CriClient(cfg.cri_sockets, cfg.lookup_timeout_s, cfg.container_ttl_s, cfg.negative_ttl_s,
                             cfg.max_containers, self.stats, cfg.cri_poll_s) if cfg.cri_sockets else None
        self.runtimes = Runtimes(self.runtime, self.cri)
        self.containers = ContainerRegistry(CgroupResolver(cfg.max_cgroups), self.runtimes, cfg.max_containers,
                                            self.stats)
        self.enricher = Enricher(self.procs, self.containers, self.stats, cfg.lookup_timeout_s)
        self._stack = AsyncExitStack()
        self._queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=cfg.queue_batches)
        self._counted = {"evictions": 0, "proc_reads": 0, "proc_misses": 0, "unresolved": 0, "name_evictions": 0}
        self._partitioned = partition.configured() > 0   # env EUNOMIA_PARTITIONS
        self._event_subjects: dict[str, str] = {}          # kind -> eunomia.event.<node>.<kind>

    async def __aenter__(self) -> "EnricherService":
        try:
            if self.cfg.seed_from_proc:
                n = await asyncio.to_thread(self.procs.seed)
                _log.info("process table seeded with %d processes from /proc", n)
            await self.containers.rescan()
            for client in self.runtimes.clients:
                await self._stack.enter_async_context(client)
                if self.cfg.watch_events:
                    watcher = asyncio.create_task(client.watch(), name=f"enricher-{client.source}-events")
                    self._stack.push_async_callback(cancel_and_wait, watcher)
            self.bus = await self._stack.enter_async_context(
                connect(self.common.servers, self.stats, name=f"eunomia-enricher-{self.common.node}",
                        cred=busauth.for_role(self.common.data_dir, "enricher", self.common.node)))
            self.batcher = await self._stack.enter_async_context(
                # durable: each batch is acked by the EVENTS stream (retried across NATS failover)
                Batcher(self.bus, self.cfg.max_batch_events, max_pending=self.cfg.max_pending_events,
                        durable=True))
            await Control.serve(self._control(), self.bus, subjects.ctl_enricher(self.common.node))
            # items are checked once, in Enricher._check (not by the bus as well)
            await self.bus.subscribe_batches(subjects.raw(self.common.node), self._on_raw,
                                             queue=self.cfg.queue_group, validate=False)
            await self.bus.nc.flush()
            await self._stack.enter_async_context(
                StatsPublisher(self.bus, self.stats, self.common.node, self.common.stats_interval))
            _log.info("enricher on node %s: %s -> %s", self.common.node, subjects.raw(self.common.node),
                      subjects.event(self.common.node, "<kind>"))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        worker = asyncio.create_task(self._work(), name="enricher-worker")
        try:
            while not stop.is_set():
                self.update_gauges()
                if worker.done():
                    worker.result()  # raises what killed it
                try:
                    await asyncio.wait_for(stop.wait(), GAUGE_INTERVAL_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            await cancel_and_wait(worker)
            await self._drain()
            self.update_gauges()

    async def _work(self) -> None:
        """Raw batches -> enriched events, in arrival (kernel) order."""
        step = self.cfg.max_batch_events * 4
        while True:
            batch = await self._queue.get()
            self.enricher.prime(batch)
            for i in range(0, len(batch), step):  # in slices, so the loop breathes between them
                await self._enrich_and_publish(batch[i:i + step])
            await asyncio.sleep(0)

    async def _drain(self) -> None:
        """What is still queued at shutdown goes out too, for SHUTDOWN_DRAIN_S (the rest is counted)."""
        deadline = time.monotonic() + SHUTDOWN_DRAIN_S
        while not self._queue.empty():
            batch = self._queue.get_nowait()
            if time.monotonic() > deadline:
                self.stats.inc("enricher_shutdown_dropped_events_total", len(batch))
                continue
            self.enricher.prime(batch)
            await self._enrich_and_publish(batch)

    async def _enrich_and_publish(self, events: list[dict]) -> None:
        node = self.common.node
        try:
            out = await self.enricher.enrich(events)
        except Exception:
            self.stats.inc("enricher_batch_errors_total")
            self.stats.inc("enricher_dropped_events_total", len(events))
            _log.exception("enrichment of a batch of %d events failed; dropped", len(events))
            return
        by_subject: dict[str, list[dict]] = {}
        names = self._event_subjects
        encoded: dict[int, Any] = {}  # id(proc view) -> the view, then its JSON once it is used again
        for ev in out:
            # events of one process in a batch share their `proc` view: it is encoded once, and
            # goes out in the others as that JSON (the same bytes)
            proc = ev["proc"]
            seen = encoded.get(id(proc))
            if seen is None:
                encoded[id(proc)] = proc
            elif seen is not proc:
                ev["proc"] = seen
            else:
                try:
                    encoded[id(proc)] = ev["proc"] = orjson.Fragment(orjson.dumps(proc))
                except TypeError:  # not encodable: sent as it is, and the bus counts the failure
                    pass
            kind = ev["kind"]
            subject = names.get(kind)
            if subject is None:
                subject = subjects.event(node, kind)
                if len(names) < 256:  # kinds come from the bus: bounded
                    names[kind] = subject
            by_subject.setdefault(subject, []).append(ev)
            if self._partitioned:  # also keyed by container, for stateful rules (shared/partition.py)
                by_subject.setdefault(partition.publish_subject(ev, node, kind), []).append(ev)
        await self.batcher.add_many(by_subject)

    def update_gauges(self) -> None:
        s = self.stats
        self.procs.tick()
        s.set("enricher_proc_table_size", len(self.procs))
        s.set("enricher_containers_known", len(self.containers))
        s.set("enricher_cgroup_cache_size", len(self.containers.cgroups))
        s.set("enricher_dns_names", len(self.enricher.names))  # addresses with a DNS name, all containers
        for key, value, name, labels in (
            ("evictions", self.procs.evictions, "enricher_proc_evictions_total", {}),
            ("proc_reads", self.procs.proc_reads, "enricher_proc_fallback_reads_total", {}),
            ("proc_misses", self.procs.proc_misses, "enricher_lookup_failures_total", {"source": "proc"}),
            ("unresolved", self.containers.cgroups.unresolved, "enricher_lookup_failures_total",
             {"source": "cgroup"}),
            ("name_evictions", self.enricher.names.evictions, "enricher_dns_name_evictions_total", {}),
        ):
            if value > self._counted[key]:
                s.inc(name, value - self._counted[key], **labels)
                self._counted[key] = value

    async def _on_raw(self, subject: str, events: list[dict]) -> None:
        await self._queue.put(events)  # bounded: a full queue holds the subscription back

    def _control(self) -> Control:
        c = Control("enricher", self.stats)
        c.op("containers", self._op_containers)
        c.op("stats", self._op_stats)
        return c

    async def _op_containers(self, req: dict) -> dict:
        return {"containers": await self.containers.listing(self.cfg.lookup_timeout_s, bool(req.get("all")))}

    def _op_stats(self, req: dict) -> dict:
        self.update_gauges()
        return self.stats.snapshot(self.common.node)
