"""The NATS bus: connection lifecycle, batched publishing, safe subscriptions.

Messages are orjson-encoded JSON arrays of events. Nothing malformed ever
reaches a handler: bad messages are logged, counted in `Stats` and skipped.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from . import busauth, log
from .schema import event_text, missing_fields
from .stats import Stats
from .tasks import cancel_and_wait

_log = log.get("bus")

MAX_BATCH_EVENTS = 256
MAX_MESSAGE_BYTES = 900 * 1024  # under NATS' default 1 MiB max_payload
SUB_PENDING_MSGS = 4096         # bounded buffer per subscription
DURABLE_ACK_TIMEOUT_S = 2.0     # wait for JetStream's ack of one message
DURABLE_RETRY_S = 30.0          # keep retrying a durable publish this long
SUBSCRIBE_FLUSH_S = 10.0        # a new subscription's round trip to the server
STREAM_CACHE_S = 30.0           # how long "does a stream capture this subject" is believed


class BadMessage(ValueError):
    """A bus message that is not a batch of events; the text says why."""


def encode_batch(events: list[dict[str, Any]]) -> bytes:
    try:
        return orjson.dumps(events)
    except TypeError:  # one bad string must not cost the batch: see _encodable
        return orjson.dumps([_encodable(e) for e in events])


def _encodable(x: Any) -> Any:
    """`x` as JSON can carry it: strings as event_text, other objects as their str()."""
    if isinstance(x, str):
        return event_text(x)
    if isinstance(x, dict):
        return {_encodable(k if isinstance(k, str) else str(k)): _encodable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encodable(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool) and not -2**63 <= x < 2**64:
        return str(x)  # past what orjson encodes
    if x is None or isinstance(x, (bool, int, float, orjson.Fragment)):
        return x
    return _encodable(str(x))


def decode_batch(data: bytes, *, validate: bool = True) -> list[dict[str, Any]]:
    """Decode one message into a list of events, or raise BadMessage."""
    if len(data) > MAX_MESSAGE_BYTES * 2:
        raise BadMessage(f"message of {len(data)} bytes exceeds limit")
    try:
        batch = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadMessage(f"not JSON: {e}") from None
    if not isinstance(batch, list):
        raise BadMessage(f"not a JSON array but {type(batch).__name__}")
    if validate:
        for i, ev in enumerate(batch):
            why = missing_fields(ev)
            if why:
                raise BadMessage(f"item {i}: {why}")
    return batch


def split_encoded(events: list[dict[str, Any]]) -> list[bytes]:
    """Encode `events` as one or more messages, each under MAX_MESSAGE_BYTES."""
    data = encode_batch(events)
    if len(data) <= MAX_MESSAGE_BYTES or len(events) <= 1:
        return [data]
    mid = len(events) // 2
    return split_encoded(events[:mid]) + split_encoded(events[mid:])


def _with_ids(parts: list[bytes], events: list[dict[str, Any]]) -> Iterator[tuple[bytes, int, str]]:
    """(message, event count, stable message id) for each encoded part."""
    i = 0
    for data in parts:
        n = len(orjson.loads(data)) if len(parts) > 1 else len(events)
        chunk = events[i:i + n]
        i += n
        yield data, n, f"{chunk[0].get('id')}+{n}" if chunk else f"empty-{id(data)}"


class Bus:
    """A connected NATS client plus our batch conventions."""

    def __init__(self, nc: Client, stats: Stats) -> None:
        self.nc = nc
        self.stats = stats
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stream_cache: dict[str, tuple[bool, float]] = {}
        self._js: Any = None   # nats' JetStreamContext, made on first use

    @property
    def js(self) -> Any:
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    async def publish(self, subject: str, data: bytes, headers: dict[str, Any] | None = None) -> None:
        await self.nc.publish(subject, data, headers=headers)

    async def publish_batch(self, subject: str, events: list[dict[str, Any]]) -> None:
        for data in split_encoded(events):
            await self.nc.publish(subject, data)
        self.stats.inc("bus_published_events_total", len(events))

    async def publish_batch_durable(self, subject: str, events: list[dict[str, Any]]) -> None:
        """Publish and wait for JetStream's ack when a stream captures `subject`.

        Each message carries a Nats-Msg-Id derived from its events, so a retry
        after a lost ack is dropped by the stream's duplicate window. Failures
        (a node down, a leader election) are retried with backoff for up to
        DURABLE_RETRY_S; only then are the events counted as failed and the
        error raised. Subjects no stream captures go out as plain messages.
        """
        if not await self._persisted(subject):
            await self.publish_batch(subject, events)
            return
        for data, n, msg_id in _with_ids(split_encoded(events), events):
            await self.publish_durable_retrying(subject, data, msg_id)
            self.stats.inc("bus_published_events_total", n)

    async def publish_many_durable(self, batches: list[tuple[str, list[dict[str, Any]]]]) -> list[int]:
        """Durable publishing of several batches with their acks awaited together
        (pipelined, in order on one connection); a message whose ack does not come
        goes through the retrying path. Returns, per batch, how many events failed."""
        sent: list[tuple[int, str, bytes, int, str, asyncio.Future[Any] | None]] = []
        failed = [0] * len(batches)
        for i, (subject, events) in enumerate(batches):
            if not await self._persisted(subject):
                try:
                    await self.publish_batch(subject, events)
                except Exception as e:
                    failed[i] = len(events)
                    _log.error("publish of %d events to %s failed: %s", len(events), subject, e)
                continue
            try:
                parts = list(_with_ids(split_encoded(events), events))
            except Exception as e:  # not encodable even so (nesting past orjson's limit): this batch only
                failed[i] = len(events)
                _log.error("encoding %d events for %s failed: %s", len(events), subject, e)
                continue
            for data, n, msg_id in parts:
                try:
                    fut = await self.js.publish_async(subject, data, wait_stall=DURABLE_ACK_TIMEOUT_S,
                                                      headers={"Nats-Msg-Id": msg_id})
                except Exception:
                    fut = None
                sent.append((i, subject, data, n, msg_id, fut))
        for i, subject, data, n, msg_id, fut in sent:
            try:
                if fut is None:
                    raise ConnectionError("not sent")
                await asyncio.wait_for(fut, DURABLE_ACK_TIMEOUT_S)
            except Exception:
                if fut is not None and not fut.done():
                    fut.cancel()
                try:
                    await self.publish_durable_retrying(subject, data, msg_id)
                except Exception as e:
                    failed[i] += n
                    _log.error("durable publish of %d events to %s failed: %s", n, subject, e)
                    continue
            self.stats.inc("bus_published_events_total", n)
        return failed

    async def publish_durable_retrying(self, subject: str, data: bytes, msg_id: str) -> None:
        """One message, acked by its stream, retried with backoff for DURABLE_RETRY_S."""
        delay, waited = 0.05, 0.0
        while True:
            try:
                await self.js.publish(subject, data, timeout=DURABLE_ACK_TIMEOUT_S,
                                      headers={"Nats-Msg-Id": msg_id})
                return
            except Exception as e:  # timeout, no responders, stream leader moving
                if waited >= DURABLE_RETRY_S:
                    raise
                self.stats.inc("bus_publish_retries_total")
                _log.debug("durable publish to %s failed (%s); retrying", subject, e)
                await asyncio.sleep(delay)
                waited += delay + DURABLE_ACK_TIMEOUT_S * isinstance(e, asyncio.TimeoutError)
                delay = min(delay * 2, 1.0)

    async def _persisted(self, subject: str) -> bool:
        """Whether a JetStream stream captures `subject` (cached for a while)."""
        now = asyncio.get_running_loop().time()
        hit = self._stream_cache.get(subject)
        if hit and now - hit[1] < STREAM_CACHE_S:
            return hit[0]
        try:
            await self.js.find_stream_name_by_subject(subject)
            found = True
        except Exception:  # no such stream, or no JetStream at all
            found = False
        self._stream_cache[subject] = (found, now)
        return found

    async def subscribe_batches(
        self,
        subject: str,
        handler: Callable[[str, list[dict[str, Any]]], Awaitable[None]],
        queue: str = "",
        validate: bool = True,
        skip: Callable[[str], bool] | None = None,
    ) -> None:
        """Run `handler(subject, events)` for every well-formed batch.

        Malformed messages are counted (`bus_malformed_total`) and skipped;
        a handler exception is counted (`handler_errors_total`) and logged:
        neither ends the subscription. A message whose subject `skip` names
        is not decoded at all (counted in `bus_skipped_messages_total`).
        """
        sub = await self.nc.subscribe(subject, queue=queue, pending_msgs_limit=SUB_PENDING_MSGS,
                                      pending_bytes_limit=256 * 1024 * 1024)
        self._subs.append(sub)
        self._tasks.append(asyncio.create_task(self._consume(sub, handler, validate, skip), name=f"sub {subject}"))
        await self._registered()

    async def _registered(self) -> None:
        """Wait until the server has the subscriptions just made: without it a
        request sent right after a service starts (from another connection)
        can beat the SUB to the server and get 'no responders'."""
        await self.nc.flush(int(SUBSCRIBE_FLUSH_S))

    async def _consume(self, sub: Any, handler: Callable[[str, list[dict[str, Any]]], Awaitable[None]],
                       validate: bool, skip: Callable[[str], bool] | None) -> None:
        async for msg in sub.messages:
            if skip is not None and skip(msg.subject):
                self.stats.inc("bus_skipped_messages_total", subject=_subject_family(msg.subject))
                continue
            try:
                events = decode_batch(msg.data, validate=validate)
            except BadMessage as e:
                self.stats.inc("bus_malformed_total", subject=_subject_family(msg.subject))
                _log.warning("dropped malformed message on %s (%d bytes): %s", msg.subject, len(msg.data), e)
                continue
            self.stats.inc("bus_received_events_total", len(events))
            try:
                await handler(msg.subject, events)
            except Exception:
                self.stats.inc("handler_errors_total", subject=_subject_family(msg.subject))
                _log.exception("handler failed on %s", msg.subject)

    async def subscribe_raw(self, subject: str, handler: Callable[[Msg], Awaitable[None]], queue: str = "") -> None:
        """Plain subscription for request/reply and control messages."""
        async def cb(msg: Msg) -> None:
            try:
                await handler(msg)
            except Exception as e:
                self.stats.inc("handler_errors_total", subject=_subject_family(msg.subject))
                _log.exception("handler failed on %s", msg.subject)
                if msg.reply:
                    try:
                        await msg.respond(orjson.dumps({"error": f"{type(e).__name__}: {e}"}))
                    except Exception:
                        pass
        self._subs.append(await self.nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=SUB_PENDING_MSGS))
        await self._registered()

    async def request_json(self, subject: str, body: dict[str, Any], timeout: float = 5.0) -> Any:
        msg = await self.nc.request(subject, orjson.dumps(body), timeout=timeout)
        return orjson.loads(msg.data)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        await cancel_and_wait(*self._tasks)
        try:
            await self.nc.drain()
        except Exception:  # reconnecting or already broken: close what is left, never raise on the way out
            try:
                await self.nc.close()
            except Exception as e:
                _log.debug("close of a broken NATS connection: %s", e)


def _subject_family(subject: str) -> str:
    """Bounded label for metrics: the first three tokens of a subject."""
    return ".".join(subject.split(".")[:3])


@asynccontextmanager
async def connect(servers: list[str] | str, stats: Stats, name: str = "eunomia",
                  cred: busauth.Credential | None = None) -> AsyncIterator[Bus]:
    """Connect (retrying forever on later disconnects) and yield a Bus.

    `cred`: the service's bus identity (shared/busauth.py); None connects
    anonymously, which a server with authorization refuses."""
    if isinstance(servers, str):
        servers = servers.split(",")

    async def error_cb(e: Exception) -> None:
        if isinstance(e, nats.errors.SlowConsumerError):
            stats.inc("bus_slow_consumer_dropped_total", subject=_subject_family(e.subject))
        else:
            stats.inc("bus_errors_total")
            _log.warning("%s: NATS error: %s", name, e)

    closing = False

    async def disconnected_cb() -> None:
        if closing:  # our own close, not a failure
            return
        stats.inc("bus_disconnects_total")
        _log.warning("%s: disconnected from NATS", name)

    async def reconnected_cb() -> None:
        _log.info("%s: reconnected to NATS", name)

    nc = await nats.connect(
        servers=servers, name=name, error_cb=error_cb, disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        connect_timeout=5, allow_reconnect=True, pending_size=64 * 1024 * 1024,
        # bounded shutdown: a JetStream pull subscription left open never finishes draining
        drain_timeout=2, **busauth.connect_kwargs(cred),
    )
    bus = Bus(nc, stats)
    try:
        yield bus
    finally:
        closing = True
        await bus.close()


class Batcher:
    """Collects events per subject and publishes them as batches.

    Flushes a subject when it has `max_events` pending, and every subject
    every `interval` s. Order across subjects is not kept: what needs the
    kernel's order travels on one subject (the node's raw stream).
    Bounded: past `max_pending` events in all, `add` waits (backpressure)
    rather than growing without limit. Durable batches are pipelined: up to
    `max_inflight` flushes wait for their JetStream acks while the caller
    goes on; a batch that has to be retried may land after a later one.
    """

    def __init__(self, bus: Bus, max_events: int = MAX_BATCH_EVENTS, interval: float = 0.05,
                 max_pending: int = 50_000, durable: bool = False, max_inflight: int = 16) -> None:
        self.bus, self.max_events, self.interval, self.max_pending = bus, max_events, interval, max_pending
        # durable: wait for JetStream acks (retrying) where a stream captures the subject
        self.durable = durable
        self._buf: dict[str, list[dict[str, Any]]] = {}
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[Any] | None = None
        self._added = asyncio.Event()  # something is buffered: the flush timer runs only then
        self.max_inflight = max_inflight
        self._inflight: set[asyncio.Task[Any]] = set()

    async def _flush_full(self, subject: str) -> None:
        """A subject's buffer is full: publish it (durable: in the background, bounded)."""
        if not self.durable:
            await self._flush_subject(subject)
            return
        events = self._buf.pop(subject)
        while len(self._inflight) >= self.max_inflight:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        t = asyncio.create_task(self._flush_durable({subject: events}))
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def add(self, subject: str, event: dict[str, Any]) -> None:
        await self.add_many({subject: [event]})

    async def add_many(self, by_subject: dict[str, list[dict[str, Any]]]) -> None:
        """Add lists of events per subject at once (one await per full batch, not per event)."""
        for subject, events in by_subject.items():
            while events:
                while self._pending >= self.max_pending:
                    self._room.clear()
                    await self._room.wait()
                buf = self._buf.setdefault(subject, [])
                room = self.max_events - len(buf)
                buf.extend(events[:room])
                self._pending += min(room, len(events))
                self._added.set()
                events = events[room:]
                if len(buf) >= self.max_events:
                    await self._flush_full(subject)

    async def _flush_subject(self, subject: str) -> None:
        events = self._buf.pop(subject, None)
        if not events:
            return
        try:
            await self.bus.publish_batch(subject, events)
        except Exception as e:
            self.bus.stats.inc("bus_publish_failed_events_total", len(events))
            _log.error("publish of %d events to %s failed: %s", len(events), subject, e)
        finally:
            self._pending -= len(events)
            self._room.set()

    async def flush(self) -> None:
        if self.durable:
            bufs, self._buf = self._buf, {}
            await self._flush_durable(bufs)
            if self._inflight:
                await asyncio.wait(list(self._inflight))
            return
        for subject in list(self._buf):
            await self._flush_subject(subject)

    async def _flush_durable(self, bufs: dict[str, list[dict[str, Any]]]) -> None:
        batches = list(bufs.items())
        try:
            failed = await self.bus.publish_many_durable(batches)
        except Exception as e:  # not expected: publish_many_durable counts its own failures
            failed = [len(ev) for _, ev in batches]
            _log.error("durable flush failed: %s", e)
        lost = sum(failed)
        if lost:
            self.bus.stats.inc("bus_publish_failed_events_total", lost)
        self._pending -= sum(len(ev) for _, ev in batches)
        self._room.set()

    async def _loop(self) -> None:
        while True:
            await self._added.wait()  # idle: no timer wakes the loop
            await asyncio.sleep(self.interval)
            self._added.clear()  # what comes during the flush sets it again
            await self.flush()

    async def __aenter__(self) -> "Batcher":
        self._task = asyncio.create_task(self._loop(), name="batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        await self.flush()
