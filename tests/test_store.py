"""The store against real parts: nats-server with JetStream, SQLite files and a real PostgreSQL 15."""
from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

import orjson
import pytest

from services.store.client import StoreClient, StoreQueryError, StoreUnavailable
from services.store.config import StoreConfig
from services.store.service import StoreService
from shared import bus as busmod
from shared import subjects
from shared.config import CommonConfig, ConfigError
from shared.service import running
from shared.stats import Stats
from shared.streams import ensure_streams

NOW = time.time_ns()
_seq = iter(range(10**9))


def cont(name: str, image: str = "localhost/bb:latest") -> dict:
    return {"id": uuid.uuid4().hex + uuid.uuid4().hex, "name": name, "image": image, "runtime": "podman",
            "labels": {"app": name}}


def ev(kind: str, *, node: str = "n1", ts: int | None = None, pid: int = 100, ppid: int = 1, comm: str = "sh",
       container: dict | None = None, exe: str = "/bin/sh", args: list | None = None, ancestors=None, **kw) -> dict:
    n = next(_seq)
    args = args or [exe]
    return {"id": f"{node}-t-{uuid.uuid4().hex[:8]}-{n}", "ts": ts if ts is not None else NOW + n * 1000,
            "node": node, "kind": kind, "pid": pid, "tid": pid, "ppid": ppid, "uid": 0, "gid": 0, "comm": comm,
            "cgroup_id": 4242 if container else 1,
            "proc": {"exe": exe, "args": args, "cmdline": " ".join(args), "name": comm, "cwd": "/", "ppid": ppid,
                     "pname": "init", "pexe": "/sbin/init", "pcmdline": "init", "ancestors": ancestors or []},
            "container": container, "k8s": None, **kw}


def alert(rule: str, priority: str, event: dict) -> dict:
    n = next(_seq)
    return {"id": f"alert-{uuid.uuid4().hex[:8]}-{n}", "ts": NOW + n * 1000, "node": event["node"], "kind": "alert",
            "pid": event["pid"], "rule": rule, "priority": priority, "output": f"{rule} by {event['comm']}",
            "tags": ["t"], "event": event, "container": event["container"], "k8s": None}


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return await request.getfixturevalue("postgres").new_database()


def running_store(nats_url: str, url: str, tmp_path, **cfg):
    return running(StoreService(StoreConfig(url=url, **cfg),
                                CommonConfig(nats_url=nats_url, node="n1", data_dir=tmp_path)))


@asynccontextmanager
async def client_bus(nats_url: str):
    async with busmod.connect(nats_url, Stats("test")) as bus:
        yield bus, StoreClient(bus)


async def until(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def all_pages(client: StoreClient, op: str, **filters) -> list[dict]:
    out, cursor = [], None
    while True:
        page = await getattr(client, op)(**filters, cursor=cursor)
        out += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


async def test_events_alerts_filters_paging_and_bad_input(nats_server, store_url, tmp_path):
    web, db = cont("web"), cont("pgdb")
    events = ([ev("exec", container=web, pid=200 + i % 3, comm="nginx") for i in range(60)]
              + [ev("open", container=db, pid=300, comm="postgres", path=f"/data/file{i}") for i in range(50)]
              + [ev("connect", node="n2", pid=5, comm="curl", family=2, daddr="1.1.1.1", dport=443, saddr="",
                    sport=0, proto="tcp", ret=0) for _ in range(30)])
    for e in events[60:70]:
        e["k8s"] = {"pod": "db-0", "namespace": "prod", "labels": {}}
    alerts = [alert("Shell in container", "warning", events[0]), alert("Write below etc", "critical", events[70]),
              alert("Debug rule", "debug", events[1])]
    alerts[1]["k8s"] = {"pod": "db-0", "namespace": "prod", "labels": {}}
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        # malformed stream messages come first: they must not block what follows
        await bus.publish(subjects.event("n1", "open"), b"{not json")
        await bus.publish(subjects.event("n1", "open"), b'[{"kind":"open"}]')
        await bus.publish(subjects.alert("warning"), b'{"an": "object"}')
        for i in range(0, len(events), 25):
            await bus.publish_batch(subjects.event(events[i]["node"], events[i]["kind"]), events[i:i + 25])
        await bus.publish_batch(subjects.alert("warning"), alerts)
        await until(lambda: svc.stats.total("events_stored_total") == 140
                    and svc.stats.total("alerts_stored_total") == 3, "140 events and 3 alerts stored")
        assert svc.stats.total("malformed_total") == 3

        everything = await all_pages(c, "events", limit=7)
        assert len(everything) == 140 and len({e["id"] for e in everything}) == 140
        assert [(e["ts"], e["id"]) for e in everything] == sorted(((e["ts"], e["id"]) for e in events), reverse=True)
        assert everything[0]["proc"]["exe"] == "/bin/sh"        # the whole enriched body comes back

        assert len(await all_pages(c, "events", kind="exec")) == 60
        assert len(await all_pages(c, "events", container=web["id"][:12])) == 60
        assert len(await all_pages(c, "events", container="pgdb", kind="open")) == 50
        assert len(await all_pages(c, "events", node="n2")) == 30
        assert len(await all_pages(c, "events", pid=201)) == 20
        assert len(await all_pages(c, "events", namespace="prod", pod="db-0")) == 10
        ts_sorted = sorted(e["ts"] for e in events)
        assert len(await all_pages(c, "events", since=ts_sorted[10], until=ts_sorted[19])) == 10
        found = await all_pages(c, "events", q="FILE4*")               # case-insensitive; a prefix
        assert {e["path"] for e in found} == {"/data/file4"} | {f"/data/file4{i}" for i in range(10)}
        assert len(await all_pages(c, "events", q="100%")) == 0        # LIKE wildcards are literal

        prio = await c.alerts(priority="warning")
        assert {a["rule"] for a in prio["items"]} == {"Shell in container", "Write below etc"}
        assert [a["rule"] for a in (await c.alerts(rule="Debug rule"))["items"]] == ["Debug rule"]
        assert len((await c.alerts(container="pgdb"))["items"]) == 1
        assert [a["rule"] for a in (await c.alerts(namespace="prod", pod="db-0"))["items"]] == ["Write below etc"]
        assert (await c.alerts(namespace="dev"))["items"] == [] and (await c.alerts(pod="db-1"))["items"] == []

        bad = {
            "limit": dict(limit=5000), "cursor": dict(cursor="garbage"), "bogus": dict(bogus=1),
            "pid": dict(pid="abc"), "pod": dict(pod=""), "kind": dict(kind="ex ec"), "since": dict(since=-5),
        }
        for param, filters in bad.items():
            with pytest.raises(StoreQueryError, match=f"'{param}'"):
                await c.events(**filters)
        with pytest.raises(StoreQueryError, match="'priority'.*not one of"):
            await c.alerts(priority="loud")
        with pytest.raises(StoreQueryError, match="needs parameter 'container'"):
            await c.process_tree()
        reply = orjson.loads((await bus.nc.request(subjects.store("events"), b"[1,2", timeout=5)).data)
        assert "not JSON" in reply["error"]
        assert svc.stats.total("bad_queries_total") >= 9

        st = await c.stats()
        assert st["events"] == 140 and st["alerts"] == 3 and st["db_bytes"] > 0
        await until(lambda: svc.pending.get("EVENTS") == 0, "consumer lag gauge at 0")
        assert svc.stats.get("store_consumer_pending", stream="EVENTS") == 0


async def test_same_event_twice_is_stored_once(nats_server, store_url, tmp_path):
    web = cont("web")
    events = [ev("exec", container=web, pid=10 + i) for i in range(40)]
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "exec"), events)
        await bus.publish_batch(subjects.event("n1", "exec"), events[:25] + events[:5])   # dupes, even in one batch
        await until(lambda: svc.stats.total("duplicates_skipped_total") == 30, "30 duplicates skipped")
        assert svc.stats.total("events_stored_total") == 40
        assert (await c.stats())["events"] == 40
        [row] = [x for x in await c.containers() if x["id"] == web["id"]]
        assert row["events"] == 40                     # derived counts ignore duplicates


@pytest.mark.parametrize("linger", [1.0, 0.0])
async def test_trickling_messages_are_gathered_into_few_transactions(nats_server, tmp_path, linger):
    """The enricher sends small messages every ~50 ms: the store gathers them for up to linger_s before
    one transaction; with linger off, each fetch is written on its own."""
    events = [ev("open", pid=700, path=f"/g{i}") for i in range(40)]
    async with running_store(nats_server.url, f"sqlite:///{tmp_path}/store.db", tmp_path, linger_s=linger,
                             fetch_timeout_s=0.1) as svc, client_bus(nats_server.url) as (bus, c):
        for e in events:
            await bus.publish_batch(subjects.event("n1", "open"), [e])
            await asyncio.sleep(0.05)
        await until(lambda: svc.stats.total("events_stored_total") >= 40, "40 events stored")
        assert (await c.stats())["events"] == 40
        batches = svc.stats.total("write_batches_total")
        if linger:
            assert batches <= 8, f"{batches} transactions for 40 messages 50 ms apart with a 1 s linger"
        else:
            assert batches >= 20, f"only {batches} transactions with linger off"


async def test_a_store_cancelled_while_lingering_gives_its_messages_back_in_seconds(nats_server, tmp_path):
    """Cancelled mid-linger, the store naks what it holds: the next one gets it in seconds, not after ack_wait."""
    url, e = f"sqlite:///{tmp_path}/store.db", ev("open", pid=701, path="/lingered")
    common = CommonConfig(nats_url=nats_server.url, node="n1", data_dir=tmp_path)
    async with client_bus(nats_server.url) as (bus, c):
        await ensure_streams(bus.js)
        a = StoreService(StoreConfig(url=url, linger_s=5.0, fetch_timeout_s=0.1), common)
        async with a:
            run_a = asyncio.create_task(a.run(asyncio.Event()))
            await asyncio.sleep(0.5)
            await bus.publish_batch(subjects.event("n1", "open"), [e])
            await asyncio.sleep(1.0)          # fetched, lingering (for 5 s)
            assert a.stats.total("events_stored_total") == 0
            run_a.cancel()
            await asyncio.gather(run_a, return_exceptions=True)
        async with running_store(nats_server.url, url, tmp_path, linger_s=0.0, fetch_timeout_s=0.1) as b:
            await until(lambda: b.stats.total("events_stored_total") == 1, "the event stored by the next store",
                        timeout=10)   # ack_wait is 30 s: only a nak brings it back this soon
            assert [x["id"] for x in (await c.events())["items"]] == [e["id"]]


async def test_store_restart_mid_stream_loses_and_duplicates_nothing(nats_server, store_url, tmp_path):
    total, per_msg = 4000, 40
    cfg = dict(fetch_batch=4, ack_wait_s=1.0)
    events = [ev("open", pid=1000 + i % 50, path=f"/f{i}") for i in range(total)]
    async with client_bus(nats_server.url) as (bus, c):
        await ensure_streams(bus.js)     # the stream records from the first event on, before any store runs

        async def publish() -> None:
            for i in range(0, total, per_msg):
                await bus.publish_batch(subjects.event("n1", "open"), events[i:i + per_msg])
                await asyncio.sleep(0.005)
        publisher = asyncio.create_task(publish())
        # store A crashes (its run task is cancelled mid-batch) while events keep coming
        a = StoreService(StoreConfig(url=store_url, **cfg), CommonConfig(nats_url=nats_server.url, data_dir=tmp_path))
        async with a:
            run_a = asyncio.create_task(a.run(asyncio.Event()))
            await until(lambda: a.stats.total("events_stored_total") >= total // 5, "store A under way")
            run_a.cancel()
            await asyncio.gather(run_a, return_exceptions=True)
        stored_a = a.stats.total("events_stored_total")
        assert 0 < stored_a < total
        # two replicas take over the same durable consumers and share the rest
        async with running_store(nats_server.url, store_url, tmp_path, **cfg) as b, \
                running_store(nats_server.url, store_url, tmp_path, **cfg) as b2:
            await publisher

            async def db_count() -> bool:
                return (await c.stats())["events"] >= total
            await until(db_count, f"all {total} events in the database", timeout=60)
            await until(lambda: b.pending.get("EVENTS") == 0, "no pending messages")
            ids = [e["id"] for e in await all_pages(c, "events", limit=1000)]
            later = b.stats.total("events_stored_total") + b2.stats.total("events_stored_total")
        assert len(ids) == total and set(ids) == {e["id"] for e in events}     # every event exactly once
        # A may have committed a batch it never acked (or counted): redelivered, found duplicate, skipped
        assert stored_a + later <= total <= stored_a + later + 4 * per_msg


async def test_database_outage_redelivers_and_loses_nothing(nats_server, tmp_path):
    from tests.pg import PgServer
    pg = PgServer().start()        # a server of its own: this test stops it
    try:
        url = await pg.new_database()
        first = [ev("open", path=f"/a{i}") for i in range(200)]
        second = [ev("open", path=f"/b{i}") for i in range(300)]
        async with running_store(nats_server.url, url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
            await bus.publish_batch(subjects.event("n1", "open"), first)
            await until(lambda: svc.stats.total("events_stored_total") == 200, "first events stored")
            await asyncio.to_thread(pg.stop_server)
            for i in range(0, 300, 30):
                await bus.publish_batch(subjects.event("n1", "open"), second[i:i + 30])
            await until(lambda: svc.stats.total("write_errors_total") >= 2, "writes failing while the database is down")
            with pytest.raises(StoreUnavailable, match="store failed on events"):
                await c.events()
            await asyncio.to_thread(pg.start_server)
            await until(lambda: svc.stats.total("events_stored_total") == 500, "all stored after the outage", 60)
            assert svc.stats.total("unwritable_total") == 0
            ids = {e["id"] for e in await all_pages(c, "events", limit=1000)}
        assert ids == {e["id"] for e in first + second}
    finally:
        pg.stop()


async def test_retention_by_age_and_row_cap(nats_server, store_url, tmp_path):
    day = 24 * 3600 * 10**9
    old = [ev("open", ts=NOW - 10 * day + i) for i in range(30)]
    recent = [ev("open", ts=NOW - day + i * 1000) for i in range(50)]
    old_alerts = [alert("r", "error", old[0]) | {"ts": NOW - 10 * day}]
    async with running_store(nats_server.url, store_url, tmp_path, retention_max_age_s=3 * 86400,
                             max_rows=20, retention_interval_s=3600) as svc, \
            client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "open"), old + recent)
        await bus.publish_batch(subjects.alert("error"), old_alerts)
        await until(lambda: svc.stats.total("events_stored_total") == 80
                    and svc.stats.total("alerts_stored_total") == 1, "all stored")
        await svc.retain_now()      # (the run at start may have begun while the events came in: count both)
        assert svc.stats.get("retention_deleted_total", table="events") == 30 + 30
        assert svc.stats.get("retention_deleted_total", table="alerts") == 1
        kept = await all_pages(c, "events")
        assert sorted(e["id"] for e in kept) == sorted(e["id"] for e in recent[-20:])   # the newest 20
        assert await svc.retain_now() == {}


async def test_containers_process_tree_and_network_graph(nats_server, store_url, tmp_path):
    web, db = cont("web"), cont("pgdb", image="localhost/pg:15")
    t = NOW
    anc = [{"pid": 10, "comm": "conmon", "exe": "/usr/bin/conmon", "args": ["conmon"]}]
    events = [
        ev("exec", container=web, ts=t + 1, pid=11, ppid=10, comm="sh", exe="/bin/sh", args=["sh", "-c", "start"],
           ancestors=anc, filename="/bin/sh", argv=["sh", "-c", "start"], ret=0),
        ev("fork", container=web, ts=t + 2, pid=11, ppid=10, comm="sh", child_pid=12, ancestors=anc),
        ev("exec", container=web, ts=t + 3, pid=12, ppid=11, comm="nginx", exe="/usr/sbin/nginx",
           args=["nginx", "-g", "daemon off;"], filename="/usr/sbin/nginx", argv=["nginx"], ret=0),
        ev("fork", container=web, ts=t + 4, pid=11, ppid=10, comm="sh", child_pid=13),
        ev("exec", container=web, ts=t + 5, pid=13, ppid=11, comm="wget", exe="/bin/wget", args=["wget", "x"]),
        ev("exit", container=web, ts=t + 6, pid=13, ppid=11, comm="wget", exe="/bin/wget", exit_code=0),
        # db listens and accepts on its own address; web connects to it twice and to the metadata service
        ev("listen", container=db, ts=t + 7, pid=50, comm="postgres", family=2, saddr="10.88.0.3", sport=5432),
        ev("accept", container=db, ts=t + 8, pid=50, comm="postgres", family=2, saddr="10.88.0.3", sport=5432,
           daddr="10.88.0.2", dport=40000, proto="tcp"),
        ev("connect", container=web, ts=t + 9, pid=12, comm="nginx", family=2, saddr="10.88.0.2", sport=40000,
           daddr="10.88.0.3", dport=5432, proto="tcp", ret=0),
        ev("connect", container=web, ts=t + 10, pid=12, comm="nginx", family=2, saddr="10.88.0.2", sport=40001,
           daddr="10.88.0.3", dport=5432, proto="tcp", ret=0),
        ev("connect", container=web, ts=t + 11, pid=13, comm="wget", family=2, saddr="", sport=0,
           daddr="169.254.169.254", dport=80, proto="tcp", ret=-101),
        ev("connect", node="n1", ts=t + 12, pid=7, comm="curl", family=10, saddr="", sport=0,
           daddr="2606:4700::1111", dport=443, proto=6, ret=0),
        ev("connect", container=web, ts=t + 13, pid=12, comm="nginx", family=2, daddr="127.0.0.1", dport=9000),
        ev("connect", container=web, ts=t + 14, pid=12, comm="nginx", family=1, daddr="/run/x.sock", dport=0),
    ]
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "mixed"), events[:7])
        await bus.publish_batch(subjects.event("n1", "mixed"), events[7:])
        await until(lambda: svc.stats.total("events_stored_total") == len(events), "all stored")

        conts = {x["name"]: x for x in await c.containers()}
        assert conts["web"]["id"] == web["id"] and conts["web"]["image"] == "localhost/bb:latest"
        assert conts["web"]["runtime"] == "podman" and conts["web"]["labels"] == {"app": "web"}
        assert conts["web"]["events"] == 11 and conts["pgdb"]["events"] == 2
        assert conts["web"]["first_seen"] == t + 1 and conts["web"]["last_seen"] == t + 14
        assert conts["web"]["cgroup_id"] == 4242 and conts["web"]["node"] == "n1"

        def shape(nodes):
            return [(n["pid"], n["exe"], n["exited"], shape(n["children"])) for n in nodes]

        expected = [(11, "/bin/sh", False, [(12, "/usr/sbin/nginx", False, []), (13, "/bin/wget", True, [])])]
        assert shape(await c.process_tree(container="web")) == expected
        assert shape(await c.process_tree(container=web["id"][:16])) == expected
        # conmon, known only as an ancestor, is outside the container but heads the tree by pid
        assert shape(await c.process_tree(pid=10)) == [(10, "/usr/bin/conmon", False, expected)]
        [sub] = await c.process_tree(pid=11)
        assert sub["args"] == ["sh", "-c", "start"] and [k["comm"] for k in sub["children"]] == ["nginx", "wget"]
        assert await c.process_tree(container="nope") == []

        g = await c.network_graph()
        nodes = {n["id"]: n for n in g["nodes"]}
        edges = {(e["source"], e["target"], e["port"]): e for e in g["edges"]}
        cw, cd = f"c:{web['id']}", f"c:{db['id']}"
        assert nodes[cw]["label"] == "web" and nodes[cd]["kind"] == "container"
        assert nodes["ip:169.254.169.254"]["kind"] == "external" and nodes["host:n1"]["kind"] == "host"
        assert edges[(cw, cd, 5432)]["count"] == 2            # connect + accept of one flow counted once
        assert edges[(cw, "ip:169.254.169.254", 80)]["count"] == 1
        assert edges[("host:n1", "ip:2606:4700::1111", 443)]["count"] == 1
        assert len(edges) == 3                                 # loopback and unix sockets are not graph edges
        assert (await c.network_graph(since=t + 12))["edges"] == [edges[("host:n1", "ip:2606:4700::1111", 443)]]


async def test_retention_keeps_the_database_under_max_bytes(nats_server, store_url, tmp_path):
    events = [ev("open", path="/p/" + "x" * 1000 + str(i)) for i in range(3000)]    # ~4 MB of bodies
    async with running_store(nats_server.url, store_url, tmp_path, max_bytes=1024 * 1024,
                             retention_interval_s=3600) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "open"), events)
        await until(lambda: svc.stats.total("events_stored_total") == 3000, "all stored")
        await svc.retain_now()      # (writes over the cap ran retention already: they wait for it)
        kept = {e["id"] for e in await all_pages(c, "events", limit=1000)}
        assert 0 < len(kept) < 3000 and svc.stats.get("retention_deleted_total", table="events") == 3000 - len(kept)
        assert kept == {e["id"] for e in events[-len(kept):]}              # the newest survive
        if store_url.startswith("sqlite"):     # PostgreSQL frees deleted rows' space only at VACUUM
            assert (await c.stats())["db_bytes"] <= 1024 * 1024        # live pages of the database file


async def test_eunomia_store_command_runs_until_sigterm(nats_server, tmp_path):
    import signal
    import sys
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "--nats", nats_server.url, "--data-dir", str(tmp_path),
        "--node", "cli1", "store", "--retention-days", "2", "--max-rows", "1000",
        stderr=asyncio.subprocess.PIPE)
    try:
        async with client_bus(nats_server.url) as (bus, c):
            async def answering() -> bool:
                try:
                    return (await c.stats())["backend"] == "sqlite"
                except Exception:
                    return False
            await until(answering, "the store process to answer")
            await bus.publish_batch(subjects.event("cli1", "exec"), [ev("exec", node="cli1") for _ in range(5)])

            async def stored() -> bool:
                return (await c.stats())["events"] == 5
            await until(stored, "5 events stored by the process")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert (tmp_path / "eunomia.db").exists()


async def test_client_reports_no_store_as_unavailable(nats_server):
    async with busmod.connect(nats_server.url, Stats("test")) as bus:
        with pytest.raises(StoreUnavailable, match="did not answer stats"):
            await StoreClient(bus, timeout=0.5).stats()


def test_process_tree_survives_pid_reuse_loops():
    from services.store.derive import build_tree
    rows = [{"pid": 1, "ppid": 3}, {"pid": 2, "ppid": 1}, {"pid": 3, "ppid": 2}, {"pid": 4, "ppid": 4}]
    roots = build_tree(rows)

    def pids(nodes):
        return [(n["pid"], pids(n["children"])) for n in nodes]
    assert pids(roots) == [(3, [(1, [(2, [])])]), (4, [])]
    orjson.dumps(roots)       # no cycle left to serialize


def test_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="store url"):
        StoreConfig(url="mysql://x")
    with pytest.raises(ConfigError, match="fetch_batch"):
        StoreConfig(fetch_batch=0)
    with pytest.raises(ConfigError, match="events_durable"):
        StoreConfig(events_durable="a.b")


def test_each_node_gets_the_ancestor_rows_of_a_chain_every_node_shares():
    """derive() skips an event's ancestors once a newer event of its node named the same chain;
    the same chain on another node (a daemon under systemd on every host) still gets its rows."""
    from services.store.derive import derive
    anc = [{"pid": 1, "comm": "systemd", "exe": "/usr/lib/systemd/systemd", "args": ["/sbin/init"]}]
    events = [ev("open", node=node, pid=pid, ppid=1, ancestors=anc, ts=NOW + i, path="/etc/hosts")
              for i, (node, pid) in enumerate([("n1", 100), ("n2", 200), ("n1", 101), ("n2", 201)])]
    rows = {(r[0], r[1]): r for r in derive(events).process_rows()}
    assert set(rows) == {("n1", 1), ("n1", 100), ("n1", 101), ("n2", 1), ("n2", 200), ("n2", 201)}
    assert rows[("n1", 1)][7] == rows[("n2", 1)][7] - 1 == NOW + 2  # each from its node's newest event
