"""Alerts POSTed as a JSON array to an HTTP endpoint, with retries.

Each batch (up to 100 alerts) is one POST; a non-2xx answer or a
connection error is retried `retries` times with exponential backoff
(backoff_s, 2*backoff_s, ...). When retries are exhausted the batch is
counted dropped (alerter_sink_dropped_total{sink="webhook", reason="failed"}).
"""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from shared import log

from .base import Sink

_log = log.get("alerter.webhook")


class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, url: str, stats, queue_size: int = 10_000, retries: int = 3,
                 backoff_s: float = 0.5, timeout_s: float = 5.0) -> None:
        super().__init__(stats, queue_size)
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, timeout_s
        self._http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        if self._http:
            await self._http.close()

    async def deliver(self, alerts: list[dict]) -> None:
        body = orjson.dumps(alerts)
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                async with self._http.post(self.url, data=body,
                                           headers={"Content-Type": "application/json"}) as r:
                    if 200 <= r.status < 300:
                        return
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = f"{type(e).__name__}: {e}"
            if attempt == self.retries:
                raise RuntimeError(f"POST {self.url} failed after {attempt + 1} attempts: {why}")
            self.stats.inc("alerter_webhook_retries_total")
            _log.warning("webhook %s: attempt %d failed (%s); retrying in %.2fs", self.url, attempt + 1, why, delay)
            await asyncio.sleep(delay)
            delay *= 2
