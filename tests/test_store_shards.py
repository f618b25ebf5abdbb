"""SQLite's word index in key-range shards (services/store/fts_shards.py), on real SQLite files:
searches across shards, retention that drops a shard once its rows are gone, the size cap met by
whole shards, and a database of schema version 3 (one FTS table) taken over as shard 0."""
from __future__ import annotations

import sqlite3
import time
from contextlib import asynccontextmanager

import orjson
import pytest

from services.store.backend import open_backend
from services.store.tables import SCHEMA_VERSION
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


def _as_version(path, version: int, *sql: str) -> None:
    """Make the file at `path` what an older schema version wrote."""
    db = sqlite3.connect(path)
    for stmt in sql:
        db.execute(stmt)
    db.execute("UPDATE schema_version SET version = ?", (version,))
    db.commit()
    db.close()


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
    _as_version(path, 3, "DROP TABLE fts_shards")    # what version 3 wrote: one events_fts, no shard table
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
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
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


def _pair_batch(t0: int, lo: int, hi: int, conts: list[dict]) -> list[dict]:
    """Row i: container i % 3 (the last one: host); path words that each container has in some
    shards only: `alpha` in container 0's rows below 1500, `beta_gamma` and `naïve` in container 1's
    rows from 1500, `common` everywhere."""
    out = []
    for i in range(lo, hi):
        c = conts[i % 3]
        word = "alpha" if (c is conts[0] and i < 1500) else \
            ("beta_gamma naïve" if (c is conts[1] and i >= 1500) else "other")
        out.append(ev("open", ts=t0 + i, path=f"/srv/{word} /x/common.log", comm="c", container=c))
    return out


async def test_a_word_search_within_a_container_skips_shards_where_it_lacks_a_word(tmp_path):
    path = tmp_path / "p.db"
    b = open_backend(f"sqlite:///{path}")
    await b.open()
    t0 = time.time_ns() - 10**12
    a, c, host = cont("web"), cont("api"), None
    try:
        b._w.shards["events"].rows_per_shard = 500
        for lo in range(0, 3000, 250):
            await b.write(_pair_batch(t0, lo, lo + 250, [a, c, host]), [])
        # late rows, below the newest shard: their pairs go with them into the shard that holds them
        await b.write([ev("open", ts=t0 + 3000 + 7, path="/srv/alpha", container=a)], [])
        await b.write([ev("open", ts=t0 + 700 + 10**6, path="/srv/late_word", container=c)], [])

        def expect(word_rows, name):
            cont_of = {0: a, 1: c, 2: host}
            return [t0 + i for i in sorted(word_rows, reverse=True) if cont_of[i % 3] is not None
                    and cont_of[i % 3]["name"] == name]
        alpha_a = expect([i for i in range(1500) if i % 3 == 0], "web")
        assert await _ts(b, q="alpha", container="web") == [t0 + 3007, *alpha_a]
        assert await _ts(b, q="alpha", container="api") == []
        beta_c = expect([i for i in range(1500, 3000) if i % 3 == 1], "api")
        for q in ("beta_gamma", "naïve", "beta_gamma naïve", "beta_gamma common.log"):
            assert await _ts(b, q=q, container="api") == beta_c, q
        assert await _ts(b, q="gamma", container="api") == []        # '_' joins a word in FTS5 too
        assert await _ts(b, q="beta_gamma", container="web") == []
        assert await _ts(b, q="alpha beta_gamma", container="web") == []
        assert await _ts(b, q="late_word", container="api") == [t0 + 700 + 10**6]
        assert len(await _ts(b, q="common", container="web", limit=1000)) == 1000
        assert await _ts(b, q="alph*", container="web") == [t0 + 3007, *alpha_a]      # prefixes: not checked
        # the skip itself: the shards where container a has no `alpha` are not read
        sh = b._w.shards["events"]
        db = sqlite3.connect(path)
        try:
            ids = {r[0]: r[1] for r in db.execute("SELECT s, id FROM names")}
            holds = [sh.may_hold(db, s, ids[a["id"]], ["alpha"]) for s in sh.load(db).list]
            n_shards = len(sh.list)
        finally:
            db.close()
        assert n_shards >= 6 and holds[:3] == [True] * 3 and holds[3:-1] == [False] * (n_shards - 4), holds
        assert holds[-1]      # the late row of t0 + 3007
    finally:
        await b.close()


async def test_a_version_4_database_keeps_its_shards_and_records_pairs_in_new_ones(tmp_path):
    path = tmp_path / "v4.db"
    a, c = cont("web"), cont("api")
    async with _filled(path, 0, 1) as (b, t0):
        b._w.shards["events"].rows_per_shard = 500
        for lo in range(0, 1500, 250):
            await b.write(_pair_batch(t0, lo, lo + 250, [a, c, None]), [])
    _as_version(path, 4, "DROP TABLE events_fts_pairs", "DROP TABLE alerts_fts_pairs",   # what version 4
                "ALTER TABLE fts_shards DROP COLUMN pairs")                               # wrote: no pairs
    b = open_backend(f"sqlite:///{path}")
    await b.open()
    try:
        b._w.shards["events"].rows_per_shard = 500
        for lo in range(1500, 3000, 250):
            await b.write(_pair_batch(t0, lo, lo + 250, [a, c, None]), [])
        assert await _ts(b, q="alpha", container="web") == [t0 + i for i in range(1497, -1, -3)]
        assert len(await _ts(b, q="beta_gamma", container="api")) == 500
    finally:
        await b.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == 5
    assert db.execute("SELECT pairs FROM fts_shards WHERE journal = 'events' ORDER BY id").fetchall() == [
        (0,), (0,), (0,), (1,), (1,), (1,)]
    db.close()


async def test_pairs_hold_after_a_full_disk_and_for_words_fts5_case_folds(tmp_path):
    """A write SQLite refuses (disk full: it rolls the transaction back itself) and writes again: its
    pairs are recorded then. And 'ſhadow' is 'shadow' to FTS5 (its case folding), so to the pairs."""
    b = open_backend(f"sqlite:///{tmp_path / 'full.db'}")
    await b.open()
    web = cont("web")
    t0 = time.time_ns() - 10**12
    try:
        await b.write([ev("open", ts=t0 + i, path=f"/srv/a{i}", container=web) for i in range(10)], [])
        await b.write([ev("open", ts=t0 + 20, path="/etc/ſhadow", comm="cat", container=web)], [])
        assert await _ts(b, q="shadow", container="web") == [t0 + 20]

        def cap(c, db):
            db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
        await b._w.call(cap)
        batch = [ev("open", ts=t0 + 100 + i, path=f"/tmp/evil{i}.sh", comm="dropper", cmdline="x" * 20000,
                    container=web) for i in range(50)]
        with pytest.raises(sqlite3.OperationalError, match="full"):
            await b.write(batch, [])
        await b._w.call(lambda c, db: db.execute("PRAGMA max_page_count=1073741823"))
        await b.write(batch, [])                    # redelivered once there is room
        assert len(await _ts(b, q="dropper", container="web")) == 50
    finally:
        await b.close()
