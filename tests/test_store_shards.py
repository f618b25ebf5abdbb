"""SQLite's word index in key-range shards (services/store/fts_shards.py), on real SQLite files:
searches across shards, retention that drops a shard once its rows are gone, the size cap met by
whole shards, and a database of schema version 3 (one FTS table) taken over as shard 0."""
from __future__ import annotations

import sqlite3
import time
from contextlib import asynccontextmanager

import orjson

from services.store.backend import open_backend
from tests.test_store import cont, ev


def _tables(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name GLOB 'events_fts*' "
                                               "AND sql LIKE 'CREATE VIRTUAL TABLE%'"))
    finally:
        db.close()


async def _ts(b, **q) -> list[int]:
    out, cursor = [], None
    while True:
        page = await b.events({**q, **({"cursor": cursor} if cursor else {})})
        out += [orjson.loads(orjson.dumps(x))["ts"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return out


@asynccontextmanager
async def _filled(path, n: int, step: int, rows_per_shard: int | None = None):
    """A store at `path` with events t0+0 .. t0+n-1 written `step` at a time; yields (backend, t0)."""
    b = open_backend(f"sqlite:///{path}")
    await b.open()
    t0 = time.time_ns() - 10**12
    try:
        if rows_per_shard:
            b._w.shards["events"].rows_per_shard = rows_per_shard
        for lo in range(0, n, step):
            await b.write(_batch(t0, lo, lo + step), [])
        yield b, t0
    finally:
        await b.close()


def _batch(t0: int, lo: int, hi: int) -> list[dict]:
    web = cont("web")
    return [ev("open", ts=t0 + i, path=f"/srv/f{i}", comm="rare" if i % 100 == 0 else "common",
               container=web if i % 2 else None) for i in range(lo, hi)]


async def test_searches_span_shards_and_retention_drops_a_shard_with_its_last_row(tmp_path):
    path = tmp_path / "s.db"
    async with _filled(path, 3500, 500, rows_per_shard=1000) as (b, t0):
        assert _tables(path) == ["events_fts", "events_fts_1", "events_fts_2", "events_fts_3"]
        rare = [t0 + i for i in range(3400, -1, -100)]
        assert await _ts(b, q="rare", limit=7) == rare                      # newest first, paged across shards
        assert await _ts(b, q="rare", container="web", limit=3) == []       # rare rows are even: host
        assert len(await _ts(b, q="common", container="web", limit=500)) == 1750
        assert await _ts(b, q="rare", since=str(t0 + 950), until=str(t0 + 2050)) == rare[14:25]
        # rows of the first shard deleted but one: its words stay; the last one gone: the shard goes
        await b.retain(t0 + 999, 10**9, 10**12)
        assert _tables(path)[0] == "events_fts" and await _ts(b, q="rare") == rare[:25]
        await b.retain(t0 + 1000, 10**9, 10**12)
        assert _tables(path) == ["events_fts_1", "events_fts_2", "events_fts_3"]
        assert await _ts(b, q="rare") == rare[:25] and await _ts(b, q="f999") == []
        # a late row below every shard left goes to the oldest one, and is found
        await b.write([ev("open", ts=t0 + 5, path="/srv/late", comm="rare")], [])
        assert (await _ts(b, q="late")) == [t0 + 5]
    db = sqlite3.connect(path)
    for t in _tables(path):
        db.execute(f"INSERT INTO {t} ({t}, rank) VALUES ('integrity-check', 0)")   # raises if corrupt
    db.close()
    b = open_backend(f"sqlite:///{path}")
    await b.open()                                                          # reopened: the same shards
    try:
        assert await _ts(b, q="rare", limit=100) == [*rare[:25], t0 + 5]
    finally:
        await b.close()


async def test_over_the_size_cap_whole_shards_go_and_the_file_shrinks(tmp_path):
    path = tmp_path / "s.db"
    async with _filled(path, 20000, 1000, rows_per_shard=2000) as (b, t0):
        before = (await b.counts())["db_bytes"]
        cap = before // 2
        res = await b.retain(0, 10**9, cap)
        after = await b.counts()
        assert after["db_bytes"] <= cap, (before, after)
        n = after["events"]
        assert 0 < n < 20000 and res.deleted["events"] == 20000 - n
        # what is left is whole shards: the oldest row left is the first key of the oldest shard left
        left = await _ts(b, limit=1000)
        assert len(_tables(path)) * 2000 >= n and min(left) - t0 in range(0, 20000, 2000)
        assert await _ts(b, q="rare", limit=1000) == [t for t in left if (t - t0) % 100 == 0]


async def test_a_version_3_database_becomes_shard_0(tmp_path):
    path = tmp_path / "v3.db"
    b = open_backend(f"sqlite:///{path}")
    await b.open()
    t0 = time.time_ns() - 10**12
    await b.write(_batch(t0, 0, 300), [])
    await b.close()
    db = sqlite3.connect(path)       # what version 3 wrote: one events_fts, no shard table
    db.execute("DROP TABLE fts_shards")
    db.execute("UPDATE schema_version SET version = 3")
    db.commit()
    db.close()
    b = open_backend(f"sqlite:///{path}")
    await b.open()
    try:
        b._w.shards["events"].rows_per_shard = 100
        await b.write(_batch(t0, 300, 600), [])
        assert _tables(path) == ["events_fts", "events_fts_1", "events_fts_2", "events_fts_3"]   # full: the next
        assert await _ts(b, q="rare") == [t0 + i for i in (500, 400, 300, 200, 100, 0)]
    finally:
        await b.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == 4
    assert db.execute("SELECT id, rows FROM fts_shards WHERE journal = 'events' ORDER BY id").fetchall() == [
        (0, 300), (1, 100), (2, 100), (3, 100)]
    db.close()


async def test_a_shard_larger_than_shards_are_now_is_cut_inside_not_dropped_whole(tmp_path):
    """A version 3 file's one index (or a cap made smaller) over the size cap: only the oldest rows go,
    not the whole shard with nearly all of history."""
    async with _filled(tmp_path / "big.db", 3000, 500) as (b, t0):   # one shard (250k rows by default)
        size = (await b.counts())["db_bytes"]
        await b.write(_batch(t0, 3000, 3100), [])
        await b.retain(0, 10**9, int(size * 0.9))               # sizes shards to a few hundred rows
        left = await _ts(b, limit=1000)
        assert 1500 < len(left) < 3100 and min(left) > t0 and max(left) == t0 + 3099
        assert await _ts(b, q="rare", limit=100) == [t for t in left if (t - t0) % 100 == 0]


async def test_a_key_below_the_newest_shard_after_everything_was_deleted_is_found(tmp_path):
    async with _filled(tmp_path / "late.db", 400, 100, rows_per_shard=100) as (b, t0):
        await b.retain(t0 + 10**6, 10**9, 10**12)               # every row older than the cutoff
        assert (await b.counts())["events"] == 0
        # an event from before the newest shard's start (a clock stepped back, a replayed backlog)
        await b.write([ev("open", ts=t0 + 150, path="/srv/back", comm="rare")], [])
        await b.write(_batch(t0, 500, 700), [])
        assert await _ts(b, q="back") == [t0 + 150]
        assert await _ts(b, q="rare") == [t0 + 600, t0 + 500, t0 + 150]
        los = [s.k_lo for s in b._w.shards["events"].list]
        assert los == sorted(los) and len(set(los)) == len(los)
