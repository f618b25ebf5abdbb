"""Alerts on the bus: batches on eunomia.alert.<priority>, acked by the
ALERTS stream where it exists (retried across NATS failover)."""
from __future__ import annotations

from shared import subjects
from shared.bus import Bus
from shared.stats import Stats

from .base import Sink


class NatsSink(Sink):
    name = "nats"

    def __init__(self, bus: Bus, stats: Stats, queue_size: int = 10_000) -> None:
        super().__init__(stats, queue_size)
        self.bus = bus

    async def deliver(self, alerts: list[dict]) -> None:
        by_subject: dict[str, list[dict]] = {}
        for a in alerts:
            by_subject.setdefault(subjects.alert(a["priority"]), []).append(a)
        for subject, batch in by_subject.items():
            await self.bus.publish_batch_durable(subject, batch)
