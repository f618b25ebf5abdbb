"""StoreService: JetStream EVENTS/ALERTS -> database; queries on eunomia.store.<op>.

At-least-once: a fetched batch of stream messages is written in one
transaction and acked only after commit; inserts are idempotent by id,
so redelivered or republished events are stored exactly once.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import orjson
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import bus as busmod
from shared import busauth, log, subjects
from shared.config import CommonConfig
from shared.stats import Stats, StatsPublisher
from shared.streams import ALERTS, EVENTS, STREAM_SUBJECTS, ensure_streams

from .backend import Backend, open_backend
from .config import StoreConfig
from .derive import unstorable
from .query import QueryError, no_params

_log = log.get("store")

STOP_TIMEOUT_S = 15.0
MAX_DELIVERIES = 5   # a message whose data the database refused this often is terminated (unwritable_total)
RETRY_DELAY_S = 1.0
NAK_ON_CANCEL_S = 2.0           # a store cancelled mid-linger hands its messages back after this
RETAIN_EARLY = 0.95             # a write finding the database over this share of max_bytes starts retention
RETAIN_MIN_GAP_S = 1.0          # ... but passes start at most this often
MAX_REPLY_BYTES = 64 * 1024 * 1024
CHUNK_HEADROOM = 4096           # bytes under max_payload for the header and protocol
CHUNK_HEADER = "Eunomia-Chunk"
QUERY_OPS = ("events", "alerts", "containers", "process_tree", "network_graph", "stats")


class StoreService:
    name = "store"

    def __init__(self, cfg: StoreConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.stats = Stats("store")
        self.url = cfg.resolved_url(common.data_dir)
        self.backend: Backend = open_backend(self.url)
        self.bus: busmod.Bus | None = None
        self.pending: dict[str, int] = {}
        self._stack = AsyncExitStack()
        self._subs: dict[str, object] = {}
        # set when run() is cancelled: loops also end on it, should a driver call swallow the CancelledError
        # (Python 3.11's wait_for can, when cancelled just as the awaited call completes)
        self._halt = asyncio.Event()
        self._retain_soon = asyncio.Event()
        self._retain_lock = asyncio.Lock()
        self._last_retain = 0.0          # monotonic start of the last retention pass
        self._over_cap = False

    async def __aenter__(self) -> "StoreService":
        try:
            await self.backend.open()
            self._stack.push_async_callback(self.backend.close)
            self.bus = await self._stack.enter_async_context(
                busmod.connect(self.common.servers, self.stats, name=f"store-{self.common.node}",
                               cred=busauth.for_role(self.common.data_dir, "store", self.common.node)))
            await ensure_streams(self.bus.js)
            for stream, durable in ((EVENTS, self.cfg.events_durable), (ALERTS, self.cfg.alerts_durable)):
                self._subs[stream] = await self.bus.js.pull_subscribe(
                    STREAM_SUBJECTS[stream][0], durable=durable, stream=stream,
                    config=ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                          deliver_policy=DeliverPolicy.ALL, ack_wait=self.cfg.ack_wait_s,
                                          max_ack_pending=self.cfg.max_ack_pending))
                # leave the durable consumer on the server; drop only our subscription (before the bus closes)
                self._stack.push_async_callback(_quietly, self._subs[stream].unsubscribe())
            for op in QUERY_OPS:
                await self.bus.subscribe_raw(subjects.store(op), self._on_query, queue=self.cfg.query_queue)
            await self._stack.enter_async_context(
                StatsPublisher(self.bus, self.stats, self.common.node, self.common.stats_interval))
        except BaseException:
            await self._stack.aclose()
            raise
        _log.info("store on %s consuming %s", self.backend.name, ", ".join(self._subs))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._consume(stream, stop), name=f"store-{stream}") for stream in self._subs]
        tasks.append(asyncio.create_task(self._retention_loop(stop), name="store-retention"))
        tasks.append(asyncio.create_task(self._lag_loop(stop), name="store-lag"))
        try:
            await stop.wait()
            # consumers finish (commit + ack) the batch in hand; the periodic loops just end
            for t in tasks[2:]:
                t.cancel()
        finally:
            if not stop.is_set():    # cancelled: end everything now
                self._halt.set()
                for t in tasks:
                    t.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for t in stuck:          # never hang the caller on a stuck driver call
                self.stats.inc("stop_stuck_tasks_total")
                _log.error("%s did not stop within %ss: %s", t.get_name(), STOP_TIMEOUT_S, t.get_stack(limit=8))
                t.cancel()

    # -- consuming ----------------------------------------------------------
    async def _consume(self, stream: str, stop: asyncio.Event) -> None:
        psub = self._subs[stream]
        while not (stop.is_set() or self._halt.is_set()):
            try:
                msgs = await psub.fetch(self.cfg.fetch_batch, timeout=self.cfg.fetch_timeout_s)
            except asyncio.TimeoutError:   # nothing to fetch (nats' TimeoutError derives from it)
                continue
            except Exception as e:   # bus down or reconnecting: retry
                self.stats.inc("fetch_errors_total", stream=stream)
                _log.warning("fetch from %s failed: %s", stream, e)
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue
            await self._linger(psub, msgs, stop)
            await self._store_batch(stream, msgs)

    async def _linger(self, psub, msgs: list, stop: asyncio.Event) -> None:
        """A small fetch gathers more (into `msgs`) for up to linger_s, until linger_bytes or fetch_batch
        messages: a few large transactions cost far less than many small ones. A failed fetch here ends
        the gathering; what is in hand is written (the next fetch meets the error)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.cfg.linger_s, self.cfg.ack_wait_s / 4)
        size = sum(len(m.data) for m in msgs)
        while len(msgs) < self.cfg.fetch_batch and size < self.cfg.linger_bytes and not (
                stop.is_set() or self._halt.is_set()):
            left = deadline - loop.time()
            if left < 0.01:
                return
            try:
                more = await psub.fetch(self.cfg.fetch_batch - len(msgs), timeout=left)
            except asyncio.CancelledError:
                # what is in hand goes back in NAK_ON_CANCEL_S, not after ack_wait (at once, it could go to
                # this store's own pull request, still open until the bus closes)
                for m in msgs:
                    await _quietly(m.nak(delay=NAK_ON_CANCEL_S))
                raise
            except Exception:   # noqa: BLE001 - a timeout (nothing more came) or the bus: write what we have
                return
            msgs += more
            size += sum(len(m.data) for m in more)

    async def _store_batch(self, stream: str, msgs: list) -> None:
        good: list[tuple[object, list[dict]]] = []
        for msg in msgs:
            try:
                batch = busmod.decode_batch(msg.data)
                for i, item in enumerate(batch):
                    why = unstorable(item)
                    if why:
                        raise busmod.BadMessage(f"item {i}: {why}")
            except busmod.BadMessage as e:
                self.stats.inc("malformed_total", stream=stream)
                _log.warning("terminated malformed message on %s (%s, %d bytes): %s",
                             stream, msg.subject, len(msg.data), e)
                await _quietly(msg.term())
                continue
            good.append((msg, batch))
        if not good:
            return
        self.stats.inc("write_batches_total", stream=stream)
        try:
            await self._write(stream, [it for _, batch in good for it in batch])
        except Exception as e:
            self.stats.inc("write_errors_total", stream=stream)
            _log.error("writing %d messages from %s failed: %s", len(good), stream, e)
            if self.backend.is_transient(e):   # database down or busy: everything again later, nothing dropped
                for msg, _ in good:
                    await _quietly(msg.nak(delay=RETRY_DELAY_S))
                await asyncio.sleep(RETRY_DELAY_S)
                return
            if len(good) > 1:
                await self._write_one_by_one(stream, good)
            else:
                await self._nak_or_term(stream, good[0][0], e)
            return
        for msg, _ in good:
            await _quietly(msg.ack())

    async def _write(self, stream: str, items: list[dict]) -> None:
        if self._over_cap:      # the last write left the database over its cap: retention first
            self._over_cap = False
            if time.monotonic() - self._last_retain >= RETAIN_MIN_GAP_S:
                await self.retain_now()
        res = await (self.backend.write(items, []) if stream == EVENTS else self.backend.write([], items))
        self.stats.inc("events_stored_total", res.events)
        self.stats.inc("alerts_stored_total", res.alerts)
        self.stats.inc("duplicates_skipped_total", res.duplicates)
        if res.db_bytes is not None and res.db_bytes > self.cfg.max_bytes * RETAIN_EARLY:
            self._retain_soon.set()     # near the cap: do not wait for the interval
            self._over_cap = res.db_bytes > self.cfg.max_bytes  # over it: the next write waits (this one is acked)

    async def _write_one_by_one(self, stream: str, good: list) -> None:
        """After a batch the database refused, each message alone: a refused one is redelivered (nak)
        until it has been tried MAX_DELIVERIES times, then it is unwritable: terminated and counted."""
        for msg, batch in good:
            try:
                await self._write(stream, batch)
                await _quietly(msg.ack())
            except Exception as e:
                if self.backend.is_transient(e):
                    await _quietly(msg.nak(delay=RETRY_DELAY_S))
                else:
                    await self._nak_or_term(stream, msg, e)

    async def _nak_or_term(self, stream: str, msg, err: Exception) -> None:
        try:
            tries = msg.metadata.num_delivered or 1
        except Exception:
            tries = 1
        if tries >= MAX_DELIVERIES:
            self.stats.inc("unwritable_total", stream=stream)
            _log.error("terminated message on %s after %d failed writes: %s", msg.subject, tries, err)
            await _quietly(msg.term())
        else:
            await _quietly(msg.nak(delay=RETRY_DELAY_S))

    # -- periodic -----------------------------------------------------------
    async def _retention_loop(self, stop: asyncio.Event) -> None:
        """Every retention_interval_s, or at once when a write finds the database near its size cap."""
        while not (stop.is_set() or self._halt.is_set()):
            self._retain_soon.clear()
            await self.retain_now()
            await _sleep_or_stop(stop, self.cfg.retention_interval_s, self._retain_soon)
            await _sleep_or_stop(stop, self._last_retain + RETAIN_MIN_GAP_S - time.monotonic())

    async def retain_now(self) -> dict[str, int]:
        cutoff = time.time_ns() - int(self.cfg.retention_max_age_s * 1e9)
        try:
            async with self._retain_lock:   # one pass at a time: each counts what is there to delete
                self._last_retain = time.monotonic()
                res = await self.backend.retain(cutoff, self.cfg.max_rows, self.cfg.max_bytes)
        except Exception as e:
            self.stats.inc("retention_errors_total")
            _log.error("retention failed: %s", e)
            return {}
        for table, n in res.deleted.items():
            self.stats.inc("retention_deleted_total", n, table=table)
        return res.deleted

    async def _lag_loop(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() or self._halt.is_set()):
            for stream, psub in self._subs.items():
                try:
                    info = await psub.consumer_info()
                    self.pending[stream] = info.num_pending + (info.num_ack_pending or 0)
                    self.stats.set("store_consumer_pending", self.pending[stream], stream=stream)
                except Exception as e:
                    _log.debug("consumer info %s: %s", stream, e)
            await _sleep_or_stop(stop, self.cfg.lag_interval_s)

    # -- queries ------------------------------------------------------------
    async def _on_query(self, msg) -> None:
        op = msg.subject.rsplit(".", 1)[-1]
        try:
            params = orjson.loads(msg.data) if msg.data else {}
            result = await self.query(op, params)
            reply = {"result": result}
        except orjson.JSONDecodeError as e:
            self.stats.inc("bad_queries_total", op=op)
            reply = {"error": f"query body is not JSON: {e}"}
        except QueryError as e:
            self.stats.inc("bad_queries_total", op=op)
            reply = {"error": str(e)}
        except Exception as e:
            # the store's own failure (database down, ...): one line, no traceback, for a client's request
            self.stats.inc("query_errors_total", op=op)
            _log.error("query %s failed: %s: %s", op, type(e).__name__, e)
            reply = {"error": f"store failed on {op}: {type(e).__name__}: {e}", "unavailable": True}
        self.stats.inc("queries_total", op=op)
        if msg.reply:
            await self._reply(op, msg.reply, orjson.dumps(reply, default=str))

    async def _reply(self, op: str, to: str, data: bytes) -> None:
        """One message, or chunks under the bus's max payload with header Eunomia-Chunk: "<i>/<n>"."""
        if len(data) > MAX_REPLY_BYTES:
            self.stats.inc("query_too_large_total", op=op)
            data = orjson.dumps({"error": f"the reply to {op} would be {len(data)} bytes (more than "
                                          f"{MAX_REPLY_BYTES}): narrow the query or lower 'limit'"})
        size = max(1024, (self.bus.nc.max_payload or 1024 * 1024) - CHUNK_HEADROOM)
        if len(data) <= size:
            await self.bus.nc.publish(to, data)
            return
        n = -(-len(data) // size)
        self.stats.inc("query_replies_chunked_total", op=op)
        for i in range(n):
            await self.bus.nc.publish(to, data[i * size:(i + 1) * size], headers={CHUNK_HEADER: f"{i + 1}/{n}"})

    async def query(self, op: str, params: object):
        if not isinstance(params, dict):
            raise QueryError(f"query must be a JSON object, not {type(params).__name__}")
        b = self.backend
        if op == "events":
            return await b.events(params)
        if op == "alerts":
            return await b.alerts(params)
        if op == "containers":
            no_params(params)
            return await b.containers()
        if op == "process_tree":
            return await b.process_tree(params)
        if op == "network_graph":
            return await b.network_graph(params)
        if op == "stats":
            no_params(params)
            counts = await b.counts()
            return {"backend": b.name, **counts, "pending": dict(self.pending),
                    "counters": {k: self.stats.total(k) for k in (
                        "events_stored_total", "alerts_stored_total", "duplicates_skipped_total",
                        "malformed_total", "retention_deleted_total")}}
        raise QueryError(f"unknown store operation {op!r} (known: {', '.join(QUERY_OPS)})")


async def _quietly(aw) -> None:
    try:
        await aw
    except Exception as e:
        _log.debug("ack/nak/term failed: %s", e)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake) if e is not None]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
