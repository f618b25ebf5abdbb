"""Counters every service keeps and publishes, for /metrics and for tests.

A service owns one `Stats`; it counts with `inc`, sets gauges with `set`,
and `StatsPublisher` sends a snapshot to `eunomia.stats.<service>.<node>`
every few seconds (with the pid, so a probe can exclude our own processes).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson

from . import log, subjects
from .tasks import cancel_and_wait

if TYPE_CHECKING:
    from .bus import Bus

Labels = tuple[tuple[str, str], ...]
_log = log.get("stats")

# Cap on label sets per metric name: cardinality stays bounded whatever comes in.
MAX_SERIES_PER_METRIC = 2000


class Stats:
    def __init__(self, service: str) -> None:
        self.service = service
        self.counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.overflow = 0  # series refused by the cardinality cap

    @staticmethod
    def _key(labels: dict[str, object] | None) -> Labels:
        return tuple(sorted((k, str(v)) for k, v in (labels or {}).items()))

    def _slot(self, table: dict[str, dict[Labels, float]], name: str, key: Labels) -> bool:
        series = table[name]
        if key in series:
            return True
        if len(series) >= MAX_SERIES_PER_METRIC:
            self.overflow += 1
            return False
        series[key] = 0.0
        return True

    def inc(self, name: str, n: float = 1, **labels: object) -> None:
        key = self._key(labels)
        if self._slot(self.counters, name, key):
            self.counters[name][key] += n

    def set(self, name: str, value: float, **labels: object) -> None:
        key = self._key(labels)
        if self._slot(self.gauges, name, key):
            self.gauges[name][key] = value

    def get(self, name: str, **labels: object) -> float:
        key = self._key(labels)
        return self.counters.get(name, {}).get(key, self.gauges.get(name, {}).get(key, 0.0))

    def total(self, name: str) -> float:
        return sum(self.counters.get(name, {}).values())

    def snapshot(self, node: str) -> dict[str, Any]:
        def dump(t: dict[str, dict[Labels, float]]) -> dict[str, Any]:
            return {n: [[dict(k), v] for k, v in s.items()] for n, s in t.items()}

        return {
            "service": self.service,
            "node": node,
            "pid": os.getpid(),
            "ts": time.time_ns(),
            "counters": dump(self.counters),
            "gauges": dump({**self.gauges, "stats_series_overflow": {(): float(self.overflow)}}),
        }


class StatsPublisher:
    """Async context manager: publishes `stats` every `interval` seconds."""

    def __init__(self, bus: "Bus", stats: Stats, node: str, interval: float = 2.0) -> None:
        self.bus, self.stats, self.node, self.interval = bus, stats, node, interval
        self._task: asyncio.Task[Any] | None = None

    async def publish_now(self) -> None:
        snap = self.stats.snapshot(self.node)
        await self.bus.publish(subjects.stats(self.stats.service, self.node), orjson.dumps(snap))

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish_now()
            except Exception as e:  # bus down: try again next tick
                _log.debug("stats publish failed: %s", e)
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> "StatsPublisher":
        self._task = asyncio.create_task(self._loop(), name=f"stats-{self.stats.service}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        try:
            await self.publish_now()
        except Exception:
            pass
