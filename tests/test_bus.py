"""The bus against a real nats-server: batches, malformed input, JetStream."""
import asyncio
from pathlib import Path

import orjson
import pytest

from shared import bus as busmod
from shared import subjects
from shared.stats import Stats
from shared.streams import ensure_streams
from tests.events import raw_event


def ev(kind="open", **kw):
    return raw_event(kind, ts=1, pid=1, **kw)


async def test_batches_round_trip_and_malformed_are_counted(nats_server):
    got: list[dict] = []
    done = asyncio.Event()
    stats = Stats("test")

    async def handler(subject, events):
        got.extend(events)
        if len(got) >= 1000:
            done.set()

    async with busmod.connect(nats_server.url, stats) as bus:
        await bus.subscribe_batches("eunomia.event.>", handler)
        await bus.nc.flush()
        # malformed first: not JSON, not an array, item without head
        await bus.publish("eunomia.event.n1.open", b"{nope")
        await bus.publish("eunomia.event.n1.open", b'{"a":1}')
        await bus.publish("eunomia.event.n1.open", b'[{"kind":"open"}]')
        async with busmod.Batcher(bus, max_events=100) as b:
            for i in range(1000):
                await b.add(subjects.event("n1", "open"), ev(i=i))
        await asyncio.wait_for(done.wait(), 10)
    assert [e["i"] for e in got] == list(range(1000))
    assert stats.get("bus_malformed_total", subject="eunomia.event.n1") == 3
    assert stats.total("bus_published_events_total") == 1000


async def test_oversized_batches_are_split_under_max_payload(nats_server):
    big = [ev(path="x" * 10_000) for _ in range(300)]  # ~3 MB in all
    parts = busmod.split_encoded(big)
    assert len(parts) > 1 and all(len(p) <= busmod.MAX_MESSAGE_BYTES for p in parts)
    assert sum(len(orjson.loads(p)) for p in parts) == 300
    got = []
    done = asyncio.Event()

    async def handler(subject, events):
        got.extend(events)
        if len(got) == 300:
            done.set()

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches("eunomia.event.>", handler)
        await bus.nc.flush()
        await bus.publish_batch("eunomia.event.n1.open", big)
        await asyncio.wait_for(done.wait(), 10)


async def test_streams_capture_events_and_alerts(nats_server):
    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await ensure_streams(bus.js)
        await ensure_streams(bus.js)  # idempotent
        await bus.publish_batch(subjects.event("n1", "exec"), [ev("exec")])
        await bus.publish_batch(subjects.alert("critical"), [ev("alert")])
        await bus.nc.flush()
        await asyncio.sleep(0.2)
        assert (await bus.js.stream_info("EVENTS")).state.messages == 1
        assert (await bus.js.stream_info("ALERTS")).state.messages == 1


def test_decode_batch_reasons():
    with pytest.raises(busmod.BadMessage, match="not JSON"):
        busmod.decode_batch(b"\xff")
    with pytest.raises(busmod.BadMessage, match="item 0: event lacks field 'id'"):
        busmod.decode_batch(b'[{"ts":1}]')


async def test_durable_publish_is_acked_and_deduplicated(nats_server):
    stats = Stats("t")
    async with busmod.connect(nats_server.url, stats) as bus:
        # no stream yet: durable falls back to a plain publish
        await bus.publish_batch_durable(subjects.event("n1", "open"), [ev()])
        assert stats.total("bus_published_events_total") == 1
        await ensure_streams(bus.js)
        bus._stream_cache.clear()
        batch = [ev() for _ in range(50)]
        async with busmod.Batcher(bus, max_events=10, durable=True) as b:
            for e in batch:
                await b.add(subjects.event("n1", "open"), e)
        # the stream acked every message before add()/flush returned
        assert (await bus.js.stream_info("EVENTS")).state.messages == 5
        # the same batch again (a retry after a lost ack) is dropped by the stream
        await bus.publish_batch_durable(subjects.event("n1", "open"), batch[:10])
        assert (await bus.js.stream_info("EVENTS")).state.messages == 5
        assert stats.get("bus_publish_failed_events_total") == 0


async def test_batcher_keeps_causal_order_across_subjects(nats_server):
    """An exec buffered before a storm of opens reaches a subscriber of both
    subjects first, though the opens' subject fills its batch first."""
    got: list[dict] = []
    done = asyncio.Event()

    async def handler(subject, events):
        got.extend(events)
        if len(got) >= 301:
            done.set()

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches("eunomia.raw.>", handler)
        await bus.nc.flush()
        async with busmod.Batcher(bus, max_events=100, interval=5) as b:
            await b.add(subjects.raw("n1"), ev("exec", seq=0))
            for i in range(1, 301):
                await b.add(subjects.raw("n1"), ev("open", seq=i))
        await asyncio.wait_for(done.wait(), 10)
    assert [e["seq"] for e in got] == list(range(301))


async def test_an_idle_batcher_sleeps_and_a_lone_event_still_goes_out_after_its_interval(nats_server):
    """No timer runs while nothing is buffered (an idle node's services do not wake every
    interval); the first event after a quiet spell is flushed one interval later."""
    got: list[tuple[float, dict]] = []
    done = asyncio.Event()

    async def handler(subject, events):
        got.extend((asyncio.get_running_loop().time(), e) for e in events)
        done.set()

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches("eunomia.raw.>", handler)
        await bus.nc.flush()
        async with busmod.Batcher(bus, max_events=100, interval=0.05) as b:
            flushes = 0
            real_flush = b.flush

            async def counted_flush() -> None:
                nonlocal flushes
                flushes += 1
                await real_flush()
            b.flush = counted_flush
            await asyncio.sleep(0.6)
            assert flushes == 0  # twelve intervals, nothing buffered: not woken
            sent = asyncio.get_running_loop().time()
            await b.add(subjects.raw("n1"), ev("exec", seq=1))
            await asyncio.wait_for(done.wait(), 5)
            assert flushes == 1 and got[0][1]["seq"] == 1 and got[0][0] - sent >= 0.04
            await asyncio.sleep(0.3)
            assert flushes == 1  # and back to sleep


async def test_the_servers_go_memory_limit_is_set_unless_the_environment_sets_one(tmp_path, monkeypatch):
    from shared.natsserver import NatsServer, NatsServerConfig, free_port

    def limit_of(srv) -> str | None:
        env = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")
        return next((e.decode().split("=", 1)[1] for e in env if e.startswith(b"GOMEMLIMIT=")), None)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    async with NatsServer(NatsServerConfig(port=free_port())) as srv:
        assert limit_of(srv) == "24MiB"
    async with NatsServer(NatsServerConfig(port=free_port(), go_mem_limit_mib=0)) as srv:
        assert limit_of(srv) is None
    monkeypatch.setenv("GOMEMLIMIT", "1GiB")
    async with NatsServer(NatsServerConfig(port=free_port())) as srv:
        assert limit_of(srv) == "1GiB"


def test_a_string_json_cannot_carry_is_replaced_not_the_batch_lost():
    """A lone surrogate (an OS name decoded with surrogateescape) or a foreign object in one event:
    the batch is still encoded, that string as U+FFFD."""
    events = [ev(path="/ok"), ev(path="/tmp/\udcff", extra={1: {2}, "big": 2**70, Path("/k\udcff"): Path("/v\udcff")})]
    decoded = busmod.decode_batch(busmod.encode_batch(events))
    assert decoded[0]["path"] == "/ok" and decoded[1]["path"] == "/tmp/\ufffd"
    assert decoded[1]["extra"] == {"1": "{2}", "big": str(2**70), "/k\ufffd": "/v\ufffd"}
    assert busmod.decode_batch(busmod.split_encoded(events)[0]) == decoded


async def test_a_batch_that_cannot_be_encoded_fails_alone(nats_server):
    """Nesting past orjson's limit cannot be encoded at all: that batch is counted failed, and the
    batches flushed with it are published and acked."""
    deep: dict = {}
    cur = deep
    for _ in range(300):
        cur["d"] = {}
        cur = cur["d"]
    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await ensure_streams(bus.js)
        failed = await bus.publish_many_durable([(subjects.event("n1", "open"), [ev(i=1)]),
                                                 (subjects.event("n1", "exec"), [ev("exec", deep=deep), ev("exec")]),
                                                 (subjects.event("n1", "exit"), [ev("exit", i=3)])])
        assert failed == [0, 2, 0]
        assert (await bus.js.stream_info("EVENTS")).state.messages == 2
