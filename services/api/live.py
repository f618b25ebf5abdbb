"""Live alerts: one bus subscription fanned out to WebSocket clients.

Each client has a bounded queue of alert batches; a client that falls behind
by a full queue is dropped (closed with a reason) and counted, never allowed to grow memory.
"""
from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSCloseCode, web

from shared import log, subjects
from shared.bus import Bus
from shared.stats import Stats
from shared.tasks import cancel_and_wait

_log = log.get("api.live")


class _Client:
    def __init__(self, ws: web.WebSocketResponse, maxsize: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=maxsize)  # batches of alerts
        self.dropped: str | None = None   # why the hub gave up on this client


class AlertHub:
    def __init__(self, stats: Stats, queue_size: int, max_clients: int) -> None:
        self.stats, self.queue_size, self.max_clients = stats, queue_size, max_clients
        self._clients: set[_Client] = set()
        self._closing: set[asyncio.Task] = set()  # close() tasks of dropped clients

    async def start(self, bus: Bus) -> None:
        await bus.subscribe_batches(subjects.ALERT_ALL, self._on_alerts)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def _on_alerts(self, subject: str, alerts: list[dict]) -> None:
        self.stats.inc("api_live_alerts_total", len(alerts))
        for c in list(self._clients):
            if c.dropped:
                continue
            try:
                c.queue.put_nowait(alerts)
            except asyncio.QueueFull:
                self._drop(c, "slow")

    def _drop(self, c: _Client, reason: str) -> None:
        c.dropped = reason
        self.stats.inc("api_ws_clients_dropped_total", reason=reason)
        _log.warning("dropping WebSocket client %s: %s", id(c), reason)
        try:
            c.queue.put_nowait([])  # wake the sender so it closes
        except asyncio.QueueFull:
            pass
        # the sender may be blocked in send: closing wakes it up
        t = asyncio.create_task(c.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=f"dropped: {reason}".encode()))
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Handle one WebSocket client until it leaves or is dropped."""
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
        if len(self._clients) >= self.max_clients:
            self.stats.inc("api_ws_clients_dropped_total", reason="too_many_clients")
            return web.json_response({"error": f"too many WebSocket clients (max {self.max_clients})"},
                                     status=503)
        await ws.prepare(request)
        c = _Client(ws, self.queue_size)
        self._clients.add(c)
        self.stats.set("api_ws_clients", len(self._clients))
        sender = asyncio.create_task(self._send_loop(c), name="ws-send")
        try:
            await ws.send_str(orjson.dumps({"type": "hello", "queue": self.queue_size}).decode())
            async for _ in ws:  # clients only listen; incoming frames are ignored
                pass
        finally:
            self._clients.discard(c)
            self.stats.set("api_ws_clients", len(self._clients))
            await cancel_and_wait(sender)
        return ws

    async def _send_loop(self, c: _Client) -> None:
        while True:
            batch = await c.queue.get()
            try:
                for alert in batch:
                    if c.dropped or c.ws.closed:
                        return
                    await c.ws.send_str(orjson.dumps({"type": "alert", "alert": alert}).decode())
            except (ConnectionError, RuntimeError) as e:
                self.stats.inc("api_ws_clients_dropped_total", reason="send_failed")
                _log.info("WebSocket send failed: %s", e)
                await c.ws.close()
                return

    async def close_all(self) -> None:
        for c in list(self._clients):
            await c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
