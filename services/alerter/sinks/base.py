"""The sink skeleton: bounded queue, one worker, batches, counted failures."""
from __future__ import annotations

import asyncio

from shared import log
from shared.stats import Stats
from shared.tasks import cancel_and_wait

_log = log.get("alerter.sink")
MAX_BATCH = 100
DRAIN_TIMEOUT_S = 5.0


class Sink:
    name = "sink"

    def __init__(self, stats: Stats, queue_size: int = 10_000) -> None:
        self.stats = stats
        self.queue: asyncio.Queue[dict] = asyncio.Queue(queue_size)
        self._task: asyncio.Task | None = None

    def offer(self, alert: dict) -> bool:
        """Queue `alert` without waiting; False (and counted) when full."""
        try:
            self.queue.put_nowait(alert)
            return True
        except asyncio.QueueFull:
            self.stats.inc("alerter_sink_dropped_total", sink=self.name, reason="queue_full")
            return False

    async def deliver(self, alerts: list[dict]) -> None:
        """Send a batch; raise to have it counted as failed."""
        raise NotImplementedError

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self.deliver(batch)
                self.stats.inc("alerter_sink_delivered_total", len(batch), sink=self.name)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.stats.inc("alerter_sink_dropped_total", len(batch), sink=self.name, reason="failed")
                _log.error("sink %s: %d alerts not delivered: %s", self.name, len(batch), e)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def __aenter__(self) -> "Sink":
        await self.open()
        self._task = asyncio.create_task(self._work(), name=f"sink-{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.wait_for(self.queue.join(), DRAIN_TIMEOUT_S)
        except asyncio.TimeoutError:
            left = self.queue.qsize()
            self.stats.inc("alerter_sink_dropped_total", left, sink=self.name, reason="shutdown")
            _log.warning("sink %s: %d alerts left undelivered at shutdown", self.name, left)
        await cancel_and_wait(self._task)
        await self.close()
