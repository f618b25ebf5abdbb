"""A 3-node NATS cluster (real processes, JetStream R3) under faults:
SIGKILL the EVENTS stream leader while events flow and a store consumes."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from services.store.config import StoreConfig
from services.store.service import StoreService
from shared import bus as busmod
from shared import partition, subjects
from shared.config import CommonConfig
from shared.schema import new_event_id
from shared.stats import Stats
from shared.streams import EVENTS, ensure_streams
from tests.cluster import NatsCluster, until

pytestmark = pytest.mark.slow

BATCHES = 150
PER_BATCH = 40
KILL_AT = 50


T0 = time.time_ns()


def batch(node: str, b: int) -> list[dict]:
    return [{"id": new_event_id(node), "ts": T0 + b * 1000 + i, "node": node,      # recent: retention keeps them
             "kind": "open", "pid": 100 + i, "comm": "t", "path": f"/tmp/{b}/{i}", "flags": 0, "mode": 0,
             "ret": 3, "proc": None, "container": None, "k8s": None} for i in range(PER_BATCH)]


async def publish_acked(js, subject: str, events: list[dict], msg_id: str) -> None:
    """JetStream publish until acked. The Nats-Msg-Id makes a retry after a lost ack a no-op."""
    data = busmod.encode_batch(events)
    for _ in range(200):
        try:
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=2)
            return
        except Exception:  # timeout, no stream response, reconnect: a leader election is under way
            await asyncio.sleep(0.1)
    raise AssertionError(f"batch {msg_id} never acknowledged")


async def test_store_loses_nothing_when_the_stream_leader_is_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("EUNOMIA_STREAM_REPLICAS", "3")
    db = tmp_path / "store.db"
    async with NatsCluster(tmp_path / "nats") as cluster:
        async with busmod.connect(cluster.url, Stats("publisher"), name="publisher") as bus:
            await ensure_streams(bus.js)
            info = await bus.js.stream_info(EVENTS)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
            leader = info.cluster.leader

            common = CommonConfig(nats_url=cluster.url, node="store1", data_dir=tmp_path, stats_interval=0.5)
            store = StoreService(StoreConfig(url=f"sqlite:///{db}", ack_wait_s=2.0), common)
            stop = asyncio.Event()
            async with store:
                task = asyncio.create_task(store.run(stop))
                published: list[str] = []
                for b in range(BATCHES):
                    if b == KILL_AT:
                        victim = next(i for i, s in enumerate(cluster.servers) if s.cfg.name == leader)
                        await cluster.kill(victim)
                    evs = batch("n1", b)
                    await publish_acked(bus.js, subjects.event("n1", "open"), evs, f"b{b}")
                    published += [e["id"] for e in evs]

                async def all_stored() -> bool:
                    return store.stats.total("events_stored_total") >= len(published)
                await until(all_stored, 60, f"{len(published)} events stored", every=0.2)
                new_leader = (await bus.js.stream_info(EVENTS)).cluster.leader
                stop.set()
                await task

            # the killed node comes back and catches up with the stream
            await cluster.restart(victim)

            async def caught_up() -> bool:
                try:
                    info = await bus.js.stream_info(EVENTS)
                except Exception:
                    return False
                peers = info.cluster.replicas or []
                return len(peers) == 2 and all(p.current and not p.offline for p in peers)
            await until(caught_up, 30, "the restarted node to catch up", every=0.2)
            stream_msgs = (await bus.js.stream_info(EVENTS)).state.messages

    stored = await _stored_ids(db)
    assert len(stored) == len(published) == BATCHES * PER_BATCH
    assert set(stored) == set(published), "an acknowledged event is missing from the store"
    assert store.stats.total("events_stored_total") == len(published), "an event was stored twice"
    assert new_leader != leader, "the stream did not fail over to another node"
    assert stream_msgs == BATCHES, "the stream holds each acknowledged batch once (Nats-Msg-Id dedupe)"


async def test_partition_mapping_holds_across_cluster_nodes(tmp_path):
    """Publish through one node, consume through the others: every node maps the same way."""
    async with NatsCluster(tmp_path / "nats", name="eunomia-map") as cluster:
        got: dict[str, list[str]] = {}
        conns = [await nats.connect(u) for u in cluster.urls]
        try:
            for i, nc in enumerate(conns[1:], 1):
                async def cb(msg, i=i):
                    got.setdefault(cluster.urls[i], []).append(msg.subject)
                await nc.subscribe(f"{partition.PEVENT}.>", cb=cb)
                await nc.flush()
            await asyncio.sleep(0.5)  # subscription interest reaches every route
            keys = [f"{k:064x}" for k in range(40)] + ["host"]
            for k in keys:
                await conns[0].publish(f"{partition.PEVENT}.{k}.n1.exec", b"[]")
            await conns[0].flush()
            want = sorted(f"{partition.PEVENT}.{partition.partition_of(k, 'n1')}.{k}.n1.exec" for k in keys)
            async def all_mapped() -> bool:
                return all(len(got.get(u, [])) == len(keys) for u in cluster.urls[1:])
            await until(all_mapped, 10, "mapped messages on every node", every=0.2)
            for u in cluster.urls[1:]:
                assert sorted(got[u]) == want
            assert len({s.split(".")[2] for s in want}) > 6, "keys spread over the partitions"
        finally:
            for nc in conns:
                await nc.close()


async def _stored_ids(db) -> list[str]:
    """Every stored event's id, read back through the store's own backend (bodies are compressed)."""
    import orjson

    from services.store.backend import open_backend
    b = open_backend(f"sqlite:///{db}")
    await b.open()
    try:
        out, cursor = [], None
        while True:
            page = orjson.loads(orjson.dumps(await b.events({"limit": 1000, **({"cursor": cursor} if cursor else {})})))
            out += [e["id"] for e in page["items"]]
            if not (cursor := page["next_cursor"]):
                return out
    finally:
        await b.close()
