"""A real probe -> enricher pipeline inside the test process, for any test.

    from tests.pipeline import Pipeline

    async with Pipeline(nats_server.url) as p:                 # node "test-<uuid>"
        run_something()
        ev = await p.wait_for(lambda e: e["kind"] == "exec" and e["proc"]["name"] == "cat", timeout=10)
        evs = await p.wait_for_all(pred, n=3)
        alerts = await p.collect("eunomia.alert.>", lambda a: a["rule"] == "x", timeout=10)

- Starts ProbeService (real BPF) and EnricherService (real NATS) in this
  event loop; entering returns once both are up (programs attached, the
  enricher subscribed) and an end-to-end marker event has come through.
- `extra=[svc, ...]` adds services (anything following shared/service.py,
  e.g. AlerterService(cfg, p.common)): they are entered after the enricher
  and run alongside; build them with `Pipeline.common_for(url, node)` or
  pass `node=` yourself so they share the pipeline's node name.
- Every enriched event of the node is kept (bounded, newest last) in
  `p.events`; `wait_for` looks at those already received, then waits.
- `probe=False` runs the enricher alone (then publish raw events yourself
  with `p.publish_raw(events)`).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from services.enricher.config import EnricherConfig
from services.enricher.service import EnricherService
from shared import subjects
from shared.bus import Bus, connect
from shared.config import CommonConfig
from shared.schema import new_event_id
from shared.stats import Stats

MAX_KEPT = 100_000
Predicate = Callable[[dict], bool]


def new_node() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def ensure_tracefs() -> None:
    """Mount tracefs/debugfs if the machine booted without them (ENVIRONMENT.md)."""
    if not Path("/sys/kernel/tracing/events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], capture_output=True)
    if not Path("/sys/kernel/debug/tracing").exists():
        subprocess.run(["mount", "-t", "debugfs", "nodev", "/sys/kernel/debug"], capture_output=True)


class Collector:
    """Bounded store of batches from one subject pattern, with waiting helpers."""

    def __init__(self, maxlen: int = MAX_KEPT) -> None:
        self.items: deque[dict] = deque(maxlen=maxlen)
        self.total = 0  # items ever added (the deque keeps the newest `maxlen`)
        self._changed = asyncio.Condition()

    async def add(self, subject: str, events: list[dict]) -> None:
        async with self._changed:
            self.items.extend(events)
            self.total += len(events)
            self._changed.notify_all()

    def _since(self, seen: int) -> list[dict]:
        """Items added after the first `seen` ones (those still kept)."""
        new = min(self.total - seen, len(self.items))
        return list(itertools.islice(self.items, len(self.items) - new, None)) if new > 0 else []

    async def wait_for_all(self, pred: Predicate, n: int = 1, timeout: float = 10.0) -> list[dict]:
        """The first `n` items matching `pred`; TimeoutError (saying how many matched) otherwise.
        Each item is tested once: waiting stays cheap however many are kept."""
        hits: list[dict] = []

        async def wait() -> list[dict]:
            seen = 0
            async with self._changed:
                while True:
                    hits.extend(e for e in self._since(seen) if _safe(pred, e))
                    seen = self.total
                    if len(hits) >= n:
                        return hits[:n]
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{len(hits)} of {n} wanted events within {timeout} s "
                               f"({len(self.items)} received in all)") from None

    async def wait_for(self, pred: Predicate, timeout: float = 10.0) -> dict:
        return (await self.wait_for_all(pred, 1, timeout))[0]

    def matching(self, pred: Predicate) -> list[dict]:
        return [e for e in self.items if _safe(pred, e)]


def _safe(pred: Predicate, e: dict) -> bool:
    try:
        return bool(pred(e))
    except (KeyError, TypeError, AttributeError, IndexError):
        return False


class Pipeline:
    def __init__(self, nats_url: str, node: str | None = None, *, probe: bool = True,
                 probe_cfg: Any = None, enricher_cfg: EnricherConfig | None = None,
                 extra: list | None = None, stats_interval: float = 0.5) -> None:
        self.node = node or new_node()
        self.common = CommonConfig(nats_url=nats_url, node=self.node, stats_interval=stats_interval)
        self.with_probe, self.probe_cfg = probe, probe_cfg
        self.enricher_cfg = enricher_cfg or EnricherConfig()
        self.extra = list(extra or [])
        self.events = Collector()
        self.probe = None
        self.enricher: EnricherService | None = None
        self.bus: Bus | None = None
        self._stack = AsyncExitStack()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._by_subject: dict[str, Collector] = {}

    @staticmethod
    def common_for(nats_url: str, node: str) -> CommonConfig:
        return CommonConfig(nats_url=nats_url, node=node, stats_interval=0.5)

    async def __aenter__(self) -> "Pipeline":
        try:
            self.bus = await self._stack.enter_async_context(connect(self.common.servers, Stats("pipeline")))
            await self.bus.subscribe_batches(f"{subjects.PREFIX}.event.{self.node}.>", self.events.add)
            await self.bus.nc.flush()
            services = []
            if self.with_probe:
                from services.probe.config import ProbeConfig
                from services.probe.service import ProbeService
                ensure_tracefs()
                self.probe = ProbeService(self.probe_cfg or ProbeConfig(), self.common)
                services.append(self.probe)
            self.enricher = EnricherService(self.enricher_cfg, self.common)
            services += [self.enricher, *self.extra]
            for svc in services:
                await self._stack.enter_async_context(svc)
                self._tasks.append(asyncio.create_task(svc.run(self._stop), name=f"pipeline {svc.name}"))
            self._stack.push_async_callback(self._stop_tasks)
            if self.with_probe:
                await self._marker()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _stop_tasks(self) -> None:
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for svc_task, r in zip(self._tasks, results):
            if isinstance(r, Exception):
                raise RuntimeError(f"{svc_task.get_name()} failed") from r

    async def _marker(self, timeout: float = 30.0) -> None:
        """Run a host process until its exec comes out enriched: the whole path works."""
        tag = f"/eunomia-ready-{uuid.uuid4().hex}"
        loop_end = asyncio.get_running_loop().time() + timeout
        while True:
            # a thread, not asyncio's child watcher: no dependence on the loop's watcher policy
            await asyncio.to_thread(subprocess.run, ["/bin/true", tag], timeout=10)
            try:
                await self.events.wait_for(lambda e: e["kind"] == "exec" and tag in e.get("argv", ()), 1.0)
                return
            except TimeoutError:
                if asyncio.get_running_loop().time() > loop_end:
                    raise TimeoutError(f"pipeline on node {self.node}: no enriched exec within {timeout} s") from None
                self.check()

    def check(self) -> None:
        """Raise if a service task died."""
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception():
                raise RuntimeError(f"{t.get_name()} died") from t.exception()

    # --- helpers for tests --------------------------------------------------
    async def wait_for(self, pred: Predicate, timeout: float = 10.0) -> dict:
        """First enriched event of this node matching `pred` (already received or arriving)."""
        self.check()
        return await self.events.wait_for(pred, timeout)

    async def wait_for_all(self, pred: Predicate, n: int, timeout: float = 10.0) -> list[dict]:
        self.check()
        return await self.events.wait_for_all(pred, n, timeout)

    async def collect(self, subject: str, pred: Predicate = lambda _: True, n: int = 1,
                      timeout: float = 10.0) -> list[dict]:
        """Subscribe `subject` (e.g. "eunomia.alert.>") on first use; wait for `n` items matching `pred`.

        The subscription stays for the pipeline's life, so call it once early
        (with n=0) to catch items that come before you wait."""
        col = self._by_subject.get(subject)
        if col is None:
            col = self._by_subject[subject] = Collector()
            await self.bus.subscribe_batches(subject, col.add, validate=False)
            await self.bus.nc.flush()
        if n <= 0:
            return []
        self.check()
        return await col.wait_for_all(pred, n, timeout)

    async def publish_raw(self, events: list[dict]) -> None:
        """Publish raw events (filled with a head where missing) as the probe would."""
        evs = [{"id": new_event_id(self.node), "ts": time.time_ns(), "node": self.node, "pid": os.getpid(),
                "tid": os.getpid(), "uid": 0, "gid": 0, "comm": "test", "cgroup_id": 0, **ev} for ev in events]
        await self.bus.publish_batch(subjects.raw(self.node), evs)
        await self.bus.nc.flush()
